"""The official `openai` Python client against the mesh (Tests/openai/run starts it).

Arguments: BASE_URL API_KEY CHAT_MODEL EMBEDDING_MODEL. Prints one JSON object with what the
client got: a chat completion, a completion, embeddings, and the error for an unknown model.
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
try:
    client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": "x"}], stream=True
    )
    streamed = None
except openai.BadRequestError as error:
    streamed = {"status": error.status_code}

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
