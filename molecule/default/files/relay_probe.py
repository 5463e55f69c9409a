"""Controller-side probes for the molecule verify step: requests through the lab edge, and the fake
upstream's request log.

  relay_probe.py chat --edge URL --host HOST --ca CA --state FILE --client NAME [--stream]
                      [--expect-status N] [--retry-for S] [--started-file PATH] [--text TEXT]
      POST /v1/chat/completions through the lab edge (Host header = the tunnel's hostname) with client
      NAME's token, read from the scenario's 0600 state file: never in argv nor in the environment (at
      -vvv Ansible prints a task's environment with the command it runs, no_log or not). With 200
      expected, the answer must be exactly what
      the fake upstream derives from the request (lab.upstream.answers). With --stream, writes
      --started-file once the first content chunk arrived and reports when the first and last chunks came.
  relay_probe.py upstream-requests --upstream URL --ca CA --run-id ID
      The fake upstream's log entries of requests that carried `X-Molecule-Run: ID`.

Prints one JSON object; exits 1 (message on stderr) when the answer is not the expected one.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from lab.upstream import answers

MODEL = "openai/gpt-4o-mini"


def fail(message: str, **report) -> None:
    print(json.dumps({"ok": False, "error": message, **report}))
    sys.stderr.write(message + "\n")
    raise SystemExit(1)


def read_stream(resp: requests.Response, started_file: str) -> dict:
    """Concatenate the SSE deltas; note when the first content and the final [DONE] arrived."""
    content, first_at, done_at = [], None, None
    for raw in resp.iter_lines():
        line = raw.decode()
        if not line.startswith("data:"):
            continue  # blank separators and ": OPENROUTER PROCESSING" comments
        data = line[5:].strip()
        if data == "[DONE]":
            done_at = time.time()
            break
        choices = json.loads(data).get("choices") or [{}]  # the final usage chunk has no choices
        delta = (choices[0].get("delta") or {}).get("content") or ""
        if delta and first_at is None:
            first_at = time.time()
            if started_file:
                Path(started_file).write_text(f"{first_at}\n")
        content.append(delta)
    return {"content": "".join(content), "first_chunk_at": first_at, "done_at": done_at}


def chat(args: argparse.Namespace) -> None:
    token = json.loads(Path(args.state).read_text(encoding="utf-8"))["client_tokens"][args.client]
    body = {"model": MODEL, "messages": [{"role": "user", "content": args.text}], "stream": args.stream}
    expected, _ = answers.chat_answer(body)
    deadline = time.monotonic() + args.retry_for
    while True:
        resp = requests.post(
            f"{args.edge}/v1/chat/completions",
            headers={"Host": args.host, "Authorization": f"Bearer {token}"},
            json=body,
            verify=args.ca,
            stream=args.stream,
            timeout=60,
        )
        if resp.status_code == args.expect_status or time.monotonic() >= deadline:
            break
        resp.close()
        time.sleep(0.5)
    report = {"status": resp.status_code}
    if resp.status_code != args.expect_status:
        fail(f"expected HTTP {args.expect_status}, got {resp.status_code}: {resp.text[:300]}", **report)
    if resp.status_code != 200:
        print(json.dumps({"ok": True, **report, "error_body": resp.json()}))
        return
    if args.stream:
        report.update(read_stream(resp, args.started_file))
        if report["done_at"] is None:
            fail("the stream ended without data: [DONE]", **report)
    else:
        report["content"] = resp.json()["choices"][0]["message"]["content"]
    if report["content"] != expected:
        fail(f"answer {report['content']!r} is not the upstream's {expected!r}", **report)
    print(json.dumps({"ok": True, **report}))


def upstream_requests(args: argparse.Namespace) -> None:
    resp = requests.get(f"{args.upstream}/_lab/requests", verify=args.ca, timeout=30)
    resp.raise_for_status()
    mine = [
        {"path": e["path"], "key": e["key"], "authorized": e["authorized"]}
        for e in resp.json()["requests"]
        if any(k.lower() == "x-molecule-run" and v == args.run_id for k, v in e["headers"].items())
    ]
    print(json.dumps({"ok": True, "requests": mine}))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p_chat = sub.add_parser("chat")
    p_chat.add_argument("--edge", required=True)
    p_chat.add_argument("--host", required=True)
    p_chat.add_argument("--ca", required=True)
    p_chat.add_argument("--state", required=True, help="the scenario's state file (lab_state_file)")
    p_chat.add_argument("--client", required=True, help="whose token of the state file to send")
    p_chat.add_argument("--stream", action="store_true")
    p_chat.add_argument("--expect-status", type=int, default=200)
    p_chat.add_argument("--retry-for", type=float, default=0, help="retry this long for the status")
    p_chat.add_argument("--started-file", default="")
    p_chat.add_argument("--text", default="molecule probe through edge, connector, relay and upstream")
    p_up = sub.add_parser("upstream-requests")
    p_up.add_argument("--upstream", required=True)
    p_up.add_argument("--ca", required=True)
    p_up.add_argument("--run-id", required=True)
    args = parser.parse_args()
    chat(args) if args.command == "chat" else upstream_requests(args)


if __name__ == "__main__":
    main()
