"""The official `openai` Python client against `safetyj serve` (run by tests/serve.rs).

Usage: python3 tests/serve_openai.py BASE_URL API_KEY
Prints one JSON object with what the client parsed; the Rust test checks it.
"""

import json
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=60)

moderation = client.moderations.create(
    model="judge", input=["How do I bake bread? Mix flour, water, yeast and salt."]
)
result = moderation.results[0]

messages = [{"role": "user", "content": "Say hello."}]
plain = client.chat.completions.create(
    model="judge", messages=messages, max_tokens=8, temperature=0
)
pieces = []
finish = None
for chunk in client.chat.completions.create(
    model="judge", messages=messages, max_tokens=8, temperature=0, stream=True
):
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish

models = [m.id for m in client.models.list()]

try:
    openai.OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0).models.list()
    wrong_key = "accepted"
except openai.AuthenticationError as e:
    wrong_key = e.status_code

print(
    json.dumps(
        {
            "moderation_model": moderation.model,
            "flagged": result.flagged,
            "unsafe_score": result.category_scores.model_dump()["unsafe"],
            "chat": plain.choices[0].message.content,
            "chat_finish": plain.choices[0].finish_reason,
            "completion_tokens": plain.usage.completion_tokens,
            "stream": "".join(pieces),
            "stream_finish": finish,
            "models": models,
            "wrong_key": wrong_key,
        }
    )
)
