"""The official `openai` Python client against the mesh (Tests/openai/run starts it).

Arguments: BASE_URL API_KEY CHAT_MODEL EMBEDDING_MODEL. Prints one JSON object with what the
client got: a chat completion, a completion, embeddings, the error for an unknown model, and the
pieces of a streamed chat and a streamed completion.
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key, chat_model, embedding_model = sys.argv[1:5]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)

chat = client.chat.completions.create(
    model=chat_model, messages=[{"role": "user", "content": "hello mesh"}]
)
completion = client.completions.create(model=chat_model, prompt="complete me")
embeddings = client.embeddings.create(
    model=embedding_model, input=["abc", "hello"], encoding_format="float"
)
try:
    client.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "x"}]
    )
    missing = None
except openai.NotFoundError as error:
    body = error.body if isinstance(error.body, dict) else {}
    missing = {"status": error.status_code, "message": body.get("message"), "type": body.get("type")}
# Streaming: every delta in the order it came, and the usage chunk asked for.
pieces = []
usage = None
for chunk in client.chat.completions.create(
    model=chat_model,
    messages=[{"role": "user", "content": "stream me please"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.model != chat_model:
        raise SystemExit(f"a chunk names the model {chunk.model!r}, not {chat_model!r}")
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
text_pieces = [
    chunk.choices[0].text
    for chunk in client.completions.create(model=chat_model, prompt="text stream", stream=True)
    if chunk.choices and chunk.choices[0].text
]
streamed = {"pieces": pieces, "usage": usage, "text_pieces": text_pieces}

print(
    json.dumps(
        {
            "chat": chat.choices[0].message.content,
            "chat_model": chat.model,
            "chat_tokens": chat.usage.total_tokens,
            "completion": completion.choices[0].text,
            "embeddings": [item.embedding for item in embeddings.data],
            "missing": missing,
            "streamed": streamed,
        }
    )
)
