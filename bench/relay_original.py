"""The original notes' relay (seeds/000, first listing), kept as a bench baseline only — never deployed.

Same design as the notes: FastAPI, a new httpx.AsyncClient per request, JSON in, JSON out. The only change
is where it sends requests (the bench's local fake upstream instead of openrouter.ai, via environment).
Run: `uvicorn --app-dir bench relay_original:app` with RELAY_ORIGINAL_UPSTREAM and OPENROUTER_API_KEY set.
"""

import os

import httpx
from fastapi import FastAPI, Request

app = FastAPI()
UPSTREAM = os.environ.get("RELAY_ORIGINAL_UPSTREAM", "https://openrouter.ai/api/v1") + "/chat/completions"


@app.post("/relay")
async def relay(request: Request):
    data = await request.json()
    headers = {
        "Authorization": f"Bearer {os.getenv('OPENROUTER_API_KEY')}",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient() as client:
        resp = await client.post(UPSTREAM, json=data, headers=headers)
        return resp.json()
