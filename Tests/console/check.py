"""The web console in a real headless Chromium (Debian's chromium and chromedriver, Selenium from
PyPI), against a running mesh: a lead with two compute agents, one of them an exec worker.

It signs in, visits every page, compares what each shows with the API (read here with the same
tokens), submits a job from the page and follows it to its end, sees an event arrive live, checks
that a read-only token cannot cancel a job it sees (no button, and a forged call is refused), signs out,
checks a node's console under the lead-away banner, and saves screenshots at 1440 and 375 px.
The browser's log must hold no error but the refusals this script provokes on purpose.

Tokens come in files (never argv). Prints one JSON object of what it measured on stdout; exits 1
with the reason on stderr at the first difference.
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


class Failed(Exception):
    pass


CONTRAST_SCRIPT = """
const parse = (s) => { const m = /rgba?\\(([^)]+)\\)/.exec(s); if (!m) return null;
  const p = m[1].split(',').map(parseFloat); return {rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1}; };
const lum = (rgb) => { const [r, g, b] = rgb.map((v) => { v /= 255;
  return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const background = (el) => { for (; el; el = el.parentElement) { const c = parse(getComputedStyle(el).backgroundColor);
  if (c && c.a > 0.9) return c.rgb; } return [255, 255, 255]; };
let worst = {ratio: 21, text: '', need: 4.5};
for (const el of document.querySelectorAll('body *')) {
  if (el instanceof SVGElement || el.getClientRects().length === 0) continue;
  if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  const style = getComputedStyle(el), fg = parse(style.color);
  if (!fg || style.visibility === 'hidden' || el.closest('button:disabled')) continue;
  const a = lum(fg.rgb), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
  const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  if (ratio / need < worst.ratio / worst.need) worst = {ratio, text: el.textContent.trim().slice(0, 40), need};
}
return worst;
"""


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def api(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, json.loads(text) if text else None


def expect(condition, message):
    if not condition:
        raise Failed(message)


class Console:
    def __init__(self, out):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1440,900", "--no-first-run", "--disable-extensions"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.out = out
        self.allowed = []  # log messages provoked on purpose (substrings)
        self.errors = []
        self.contrast = 21.0

    def wait(self, what, condition, timeout=15):
        def probe(_):
            try:
                return condition()
            except StaleElementReferenceException:
                return False
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(probe)
        except TimeoutException:
            raise Failed("timed out after %ss waiting for %s (page %s)" % (timeout, what, self.driver.current_url))

    def find(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector):
        found = self.find(selector)
        return found[0] if found else None

    def text(self, selector):
        """The rendered text of the first match, read in one step in the page (the console
        re-renders parts when events arrive, so an element found earlier may be gone)."""
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null", selector)

    def visible(self, selector):
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return !!e && e.getClientRects().length > 0", selector)

    def click(self, what, selector):
        """Clicks the first match as a user does, finding it again if the page re-rendered it."""
        def attempt():
            element = self.one(selector)
            if element is None:
                return False
            element.click()
            return True
        self.wait(what, attempt)

    def go(self, page):
        self.driver.execute_script("location.hash = arguments[0]", "#/" + page)
        self.wait("page " + page, lambda: self.one("main[data-page='%s'][data-loaded]" % page) is not None)

    def reload_page(self, page):
        self.driver.execute_script("document.getElementById('main').removeAttribute('data-loaded')")
        self.go(page)

    def shot(self, name):
        if name.startswith("desktop-"):
            worst = self.min_contrast()
            self.contrast = min(self.contrast, worst["ratio"])
            if worst["ratio"] < worst["need"]:
                raise Failed("on %s, text %r has a contrast of %.2f (needs %.1f)" % (name, worst["text"], worst["ratio"], worst["need"]))
        path = os.path.join(self.out, name + ".png")
        self.driver.save_screenshot(path)
        return path

    def drain_log(self, allowed=()):
        """The browser's new log entries; any SEVERE one not matching `allowed` is an error."""
        for entry in self.driver.get_log("browser"):
            if entry.get("level") != "SEVERE":
                continue
            message = entry.get("message", "")
            if any(a in message for a in allowed):
                continue
            self.errors.append(message)

    def fetch(self, method, path, csrf=True):
        """A call from the page itself, with the session cookie (and its CSRF token when asked)."""
        return self.driver.execute_async_script(
            """
            const [method, path, csrf, done] = arguments;
            (async () => {
              const headers = {};
              if (csrf) {
                const session = await (await fetch('/ui/session', {credentials: 'same-origin'})).json();
                headers['X-Aurora-CSRF'] = session.csrf;
              }
              const response = await fetch(path, {method, headers, credentials: 'same-origin'});
              let body = null;
              try { body = await response.json(); } catch (e) {}
              done({status: response.status, body});
            })().catch((e) => done({status: -1, body: String(e)}));
            """, method, path, csrf)

    def min_contrast(self):
        """The lowest WCAG contrast ratio of any visible text on the page against its background,
        with what it is; large text (24 px, or 18.66 px bold) needs 3, the rest 4.5."""
        return self.driver.execute_script(CONTRAST_SCRIPT)

    def sign_in(self, base, token):
        self.driver.get(base + "/ui/")
        self.wait("the sign-in form", lambda: self.visible("#signin-form"))
        field = self.one("#token")
        field.clear()
        field.send_keys(token)
        field.send_keys(Keys.ENTER)
        self.wait("the console after signing in", lambda: self.visible("#app") and self.one("main[data-loaded]"))

    def sign_out(self):
        self.click("the sign-out button", "#signout")
        self.wait("the sign-in form after signing out", lambda: self.visible("#signin-form"))

    def quit(self):
        self.driver.quit()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lead", required=True)
    parser.add_argument("--lead-token-file", required=True)
    parser.add_argument("--node", required=True, help="a compute agent's URL (the lead-away banner)")
    parser.add_argument("--node-token-file", required=True)
    parser.add_argument("--lead-pid", type=int, required=True, help="stopped (SIGSTOP) and resumed for the banner")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    lead, admin = args.lead, read(args.lead_token_file)
    node, node_token = args.node, read(args.node_token_file)
    os.makedirs(args.out, exist_ok=True)
    console = Console(args.out)
    report = {"pages": [], "screenshots": []}
    try:
        run(console, report, lead, admin, node, node_token, args.lead_pid)
    except Failed as failure:
        try:
            report["screenshots"].append(console.shot("failure"))
        except Exception:
            pass
        print("console check failed: %s" % failure, file=sys.stderr)
        print(json.dumps(report))
        return 1
    finally:
        console.quit()
    print(json.dumps(report))
    return 0


def run(console, report, lead, admin, node, node_token, lead_pid):
    c = console

    # --- Sign-in: a wrong token is refused on the form ----------------------------------------
    c.driver.get(lead + "/ui/")
    c.wait("the sign-in form", lambda: c.visible("#signin-form"))
    expect(not c.visible("#app"), "the console shows before signing in")
    c.one("#token").send_keys("aur_not-a-token")
    c.one("#token").send_keys(Keys.ENTER)
    c.wait("the refusal of a wrong token", lambda: "does not take" in (c.text("#signin-error") or ""))
    c.drain_log(allowed=["/ui/session - Failed to load resource: the server responded with a status of 401"])

    c.sign_in(lead, admin)
    cookie = next((k for k in c.driver.get_cookies() if k["name"] == "aurora_session"), None)
    expect(cookie is not None, "no aurora_session cookie after signing in")
    expect(cookie.get("httpOnly") is True, "the session cookie is not HttpOnly: %r" % cookie)
    expect(cookie.get("sameSite") == "Strict", "the session cookie is not SameSite=Strict: %r" % cookie)
    expect(c.driver.execute_script("return document.cookie").find("aurora_session") < 0,
           "the page's script can read the session cookie")
    expect("(admin)" in c.text("#who"), "the header does not name the admin role: %r" % c.text("#who"))

    # --- Mesh: every node, with the API's state ---------------------------------------------
    c.go("mesh")
    _, listed = api(lead, admin, "GET", "/nodes")
    names = sorted(n["name"] for n in listed["nodes"])
    c.wait("one row per node", lambda: sorted(r.get_attribute("data-node") for r in c.find("#nodes-table tbody tr[data-node]")) == names)
    for n in listed["nodes"]:
        shown = c.text("#nodes-table tr[data-node='%s'] td[data-col='state']" % n["name"])
        expect(shown == n["state"], "node %s shows state %r, the API says %r" % (n["name"], shown, n["state"]))
        vpn = c.text("#nodes-table tr[data-node='%s'] td[data-col='vpn_ip']" % n["name"])
        expect(vpn == n["vpn_ip"], "node %s shows VPN IP %r, the API says %r" % (n["name"], vpn, n["vpn_ip"]))
    expect(c.one("#mesh-summary").get_attribute("data-count") == str(len(names)), "the summary's node count differs")
    c.wait("the topology's nodes", lambda: len(c.find("#topology svg g.node")) == len(names))
    expect(len(c.find("#topology svg g.link")) >= 1, "the topology has no link")
    report["nodes"] = len(names)
    report["pages"].append("mesh")
    report["screenshots"].append(c.shot("desktop-mesh"))

    # --- Keyboard: the navigation is reachable with Tab and opens with Enter -------------------
    c.driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    reached = False
    for _ in range(12):
        ActionChains(c.driver).send_keys(Keys.TAB).perform()
        active = c.driver.switch_to.active_element
        if active.get_attribute("data-page") == "gpus":
            reached = True
            active.send_keys(Keys.ENTER)
            break
    expect(reached, "Tab never reached the GPUs & jobs link")
    c.wait("the GPUs page opened from the keyboard", lambda: c.one("main[data-page='gpus'][data-loaded]") is not None)

    # --- GPUs and jobs: cards, a job submitted from the page, its live output ------------------
    _, status = api(lead, admin, "GET", "/api/gpu/status")
    c.wait("one card per GPU node", lambda: len(c.find("#gpu-cards section[data-gpu-node]")) == len(status["nodes"]))
    for n in status["nodes"]:
        for gpu in n["gpus"]:
            free = c.text("section[data-gpu-node='%s'] div[data-gpu='%s'] span[data-col='free']" % (n["name"], gpu["uuid"]))
            expect(free is not None and free.startswith(str(round(gpu["free_vram_mb"] / 1024, 1))) or free == "%d MB" % gpu["free_vram_mb"],
                   "GPU %s on %s shows %r free, the API says %d MB" % (gpu["uuid"], n["name"], free, gpu["free_vram_mb"]))
    argv = c.one("#submit-argv")
    argv.send_keys("echo console-check-output")
    c.click("the submit button", "#submit-button")
    c.wait("the submitted job's id", lambda: c.one("#submit-result a[data-submitted]") is not None)
    job_id = c.one("#submit-result a[data-submitted]").get_attribute("data-submitted")
    code, job = api(lead, admin, "GET", "/api/gpu/jobs/" + job_id)
    expect(code == 200 and job["submitted_by"] == "operator", "the page's job is not on the lead: %s %r" % (code, job))

    def settled():
        _, j = api(lead, admin, "GET", "/api/gpu/jobs/" + job_id)
        row = c.text("#jobs-table tr[data-job='%s'] td[data-col='state']" % job_id)
        return j["state"] == "succeeded" and row == "succeeded"
    c.wait("the job to succeed, on the page and in the API", settled, timeout=30)
    c.wait("the job's output on the page", lambda: "console-check-output" in (c.text("#job-output") or ""))
    report["job"] = {"id": job_id, "state": "succeeded"}
    report["pages"].append("gpus")
    report["screenshots"].append(c.shot("desktop-gpus"))

    # A long job for the read-only check, and cordoning from the page (admin).
    code, long_job = api(lead, admin, "POST", "/api/gpu/jobs",
                         {"kind": "exec", "payload": {"argv": ["sleep", "120"]}, "requirements": {"gpu_count": 1}})
    expect(code == 201, "submitting the long job: %s %r" % (code, long_job))
    gpu_node = status["nodes"][0]["name"]
    c.click("the cordon button", "button[data-action='cordoned'][data-node='%s']" % gpu_node)

    def cordoned():
        _, n = api(lead, admin, "GET", "/nodes/" + gpu_node)
        return (n.get("scheduling") or {}).get("state") == "cordoned"
    c.wait("the node cordoned through the page", cordoned)
    c.click("the reopen button", "button[data-action='open'][data-node='%s']" % gpu_node)
    c.wait("the node reopened through the page", lambda: not cordoned())

    # --- Secrets: the API's versions, the audit chain verified, no value anywhere -------------
    c.go("secrets")
    _, secrets = api(lead, admin, "GET", "/api/secrets")
    expect(secrets["secrets"], "the mesh has no secret to show")
    for s in secrets["secrets"]:
        key = "/".join([s["service"], s["key_name"], s["scope"], s["scope_id"]])
        c.wait("secret %s" % key, lambda: c.one("#secrets-table tr[data-secret='%s']" % key) is not None)
        shown = c.text("#secrets-table tr[data-secret='%s'] td[data-col='version']" % key)
        expect(shown == str(s["version"]), "secret %s shows version %r, the API says %d" % (key, shown, s["version"]))
    expect("verified" in c.text("#audit"), "the audit chain is not shown verified: %r" % c.text("#audit"))
    expect(c.one("#resolution-table") is not None, "no resolution table")
    c.click("the rotate button", "#rotate")
    c.wait("the key rotation's result", lambda: "re-wrapped" in (c.text("#rotation") or ""), timeout=30)
    _, audit = api(lead, admin, "GET", "/api/audit?limit=5")
    expect(any("rotat" in e["action"] for e in audit["entries"]), "the rotation is not in the audit chain: %r" % audit)
    page_text = c.one("body").text
    expect("console-secret-value" not in page_text, "a secret's value is on the page")
    report["pages"].append("secrets")
    report["screenshots"].append(c.shot("desktop-secrets"))

    # --- PostgreSQL and Health ----------------------------------------------------------------
    c.go("postgres")
    _, replicas = api(lead, admin, "GET", "/api/postgres/replicas")
    expect(replicas["members"], "the API lists no replica member")
    for member in replicas["members"]:
        want = (member.get("local") or {}).get("state") or (member.get("primary_view") or {}).get("state")
        c.wait("replica member %s" % member["node"], lambda: c.one("#replicas-table tr[data-node='%s']" % member["node"]) is not None)
        shown = c.text("#replicas-table tr[data-node='%s'] td[data-col='state']" % member["node"])
        expect(shown == want, "replica %s shows %r, the API says %r" % (member["node"], shown, want))
        expect(c.one("#replicas-table tr[data-node='%s'] svg.spark polyline" % member["node"]) is not None, "no lag graph")
    report["pages"].append("postgres")
    report["screenshots"].append(c.shot("desktop-postgres"))
    c.go("health")
    c.wait("the mesh's checks", lambda: len(c.find("#node-checks-table tr[data-check]")) >= 1)
    _, one_node = api(lead, admin, "GET", "/nodes/" + gpu_node)
    for check in one_node.get("checks") or []:
        shown = c.text("#node-checks-table tr[data-node='%s'][data-check='%s'] td[data-col='status']" % (gpu_node, check["name"]))
        expect(shown == check["status"], "check %s of %s shows %r, the API says %r" % (check["name"], gpu_node, shown, check["status"]))
    report["pages"].append("health")
    report["screenshots"].append(c.shot("desktop-health"))

    # --- Events: one arrives live within 2 s ----------------------------------------------------
    c.go("events")
    c.wait("the stream to open", lambda: "on" in (c.one("#live").get_attribute("class") or ""))
    before = time.monotonic()
    code, written = api(lead, admin, "POST", "/api/secrets",
                        {"service": "console", "key_name": "live_check", "value": "console-secret-value", "scope": "global"})
    expect(code == 201, "writing the live-check secret: %s %r" % (code, written))
    c.wait("the secret.changed event on the page", lambda: any(
        "live_check" in li.text for li in c.find("#events-list li[data-type='secret.changed']")), timeout=5)
    latency = time.monotonic() - before
    expect(latency <= 2.0, "the event took %.2f s to show (over 2 s)" % latency)
    report["event_latency_s"] = round(latency, 3)
    c.one("#event-type").send_keys("job.")
    c.wait("the filter to keep only job events", lambda: c.find("#events-list li") and all(
        li.get_attribute("data-type").startswith("job.") for li in c.find("#events-list li")))
    report["pages"].append("events")
    report["screenshots"].append(c.shot("desktop-events"))
    c.drain_log()

    # --- 375 px: no page wider than the screen ---------------------------------------------------
    c.driver.set_window_size(375, 812)
    for page in ("mesh", "gpus", "events"):
        c.reload_page(page)
        width = c.driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        expect(width[0] <= width[1], "at 375 px the %s page is %d px wide (window %d)" % (page, width[0], width[1]))
        report["screenshots"].append(c.shot("narrow-" + page))
    c.driver.set_window_size(1440, 900)
    c.drain_log()

    # --- Sign out: the session ends on the agent, not only in the page -------------------------
    c.sign_out()
    expect(not any(k["name"] == "aurora_session" for k in c.driver.get_cookies()), "the cookie survives signing out")
    gone = c.fetch("GET", "/api/gpu/jobs", csrf=False)
    expect(gone["status"] == 401, "after signing out the page still reads jobs: %r" % gone)
    c.drain_log(allowed=["Failed to load resource: the server responded with a status of 401"])

    # --- A read-only token: sees its company's job, cannot cancel it -----------------------------
    # A read token sees the jobs of its company's API tokens: one is submitted with a submit
    # token of the same company (a model no node serves, so it stays queued).
    def api_token(role):
        code, made = api(lead, admin, "POST", "/api/tokens", {"kind": "api", "role": role, "company": "acme"})
        expect(code == 201, "making a %s token: %s %r" % (role, code, made))
        return made["token"]
    reader, submitter = api_token("read"), api_token("submit")
    code, queued = api(lead, submitter, "POST", "/api/gpu/jobs", {
        "kind": "generate", "payload": {"model": "console-absent-model", "prompt": "hi"}, "allow_unplaceable": True})
    expect(code == 201 and queued["state"] == "queued", "submitting acme's job: %s %r" % (code, queued))
    c.sign_in(lead, reader)
    expect("(read)" in c.text("#who"), "the header does not name the read role: %r" % c.text("#who"))
    c.go("gpus")
    c.wait("acme's job listed for its read token", lambda: c.one("#jobs-table tr[data-job='%s']" % queued["id"]) is not None)
    expect(c.text("#jobs-table tr[data-job='%s'] td[data-col='state']" % queued["id"]) == "queued", "acme's job is not shown queued")
    expect(c.one("#jobs-table tr[data-job='%s']" % long_job["id"]) is None, "a read-only session lists the admin's job")
    expect(not c.find("button[data-cancel]"), "a read-only session is offered a cancel button")
    expect(c.one("#submit-form") is None, "a read-only session is offered the submit form")
    expect(not c.find("button[data-action]"), "a read-only session is offered cordon/drain")
    forged = c.fetch("DELETE", "/api/gpu/jobs/" + queued["id"])
    expect(forged["status"] == 403, "a read-only session's cancel was not refused: %r" % forged)
    no_csrf = c.fetch("DELETE", "/api/gpu/jobs/" + queued["id"], csrf=False)
    expect(no_csrf["status"] == 403 and no_csrf["body"]["error"]["code"] == "csrf", "a call without the CSRF token: %r" % no_csrf)
    _, still = api(lead, admin, "GET", "/api/gpu/jobs/" + queued["id"])
    expect(still["state"] == "queued", "the read-only session changed the job: %r" % still["state"])
    c.go("secrets")
    expect(c.one("#secrets [data-needs='admin']") is not None, "a read-only session is not told secrets need admin")
    c.drain_log(allowed=["status of 403"])
    report["read_only"] = {"cancel_status": forged["status"], "no_csrf_status": no_csrf["status"]}
    c.sign_out()
    api(lead, admin, "DELETE", "/api/gpu/jobs/" + long_job["id"])
    api(lead, admin, "DELETE", "/api/gpu/jobs/" + queued["id"])

    # --- A node's console with the lead away ---------------------------------------------------
    c.sign_in(node, node_token)
    c.go("mesh")
    c.wait("the node's mesh view", lambda: len(c.find("#nodes-table tr[data-node]")) == len(names))
    expect(c.one("#banner").get_attribute("hidden") is not None, "the lead-away banner shows while the lead answers")
    os.kill(lead_pid, signal.SIGSTOP)
    try:
        c.wait("the lead-away banner", lambda: c.visible("#banner") and "lead is away" in c.text("#banner"), timeout=20)
        expect(len(c.find("#nodes-table tr[data-node]")) == len(names), "the cached view lost nodes")
        report["screenshots"].append(c.shot("desktop-lead-away"))
    finally:
        os.kill(lead_pid, signal.SIGCONT)
    c.wait("the banner to clear once the lead answers", lambda: not c.visible("#banner"), timeout=20)
    c.drain_log(allowed=["status of 503", "status of 502", "status of 504"])
    report["pages"].append("lead-away")

    expect(not c.errors, "the browser logged errors: %s" % c.errors)
    report["browser_errors"] = 0
    report["min_contrast"] = round(c.contrast, 2)


if __name__ == "__main__":
    sys.exit(main())
