"""``yidi-gateway``: send request files to Yidi and print the answers.

    yidi-gateway send deploy/demo/requests/01-we1-langfang-retiree-beijing.json
    yidi-gateway send --new-msgid requests/*.json
    yidi-gateway file deploy/demo/filing/*.json   # filing requests, answered on filing.results
    yidi-gateway clearing run-month.json          # clearing requests, answered on clearing.results

With --new-msgid, each request's fresh msgid is printed on stderr as it is published. If a publish
fails, the requests after it are not sent; the msgids of those published before it are printed on
stderr, and their answers are waited for and printed, before the exit.

Exit status: 0 when every request was answered and accepted; 1 when every one was answered and
some were refused (or an answer could not be read: not a JSON object, said with its bytes); 2 when Kafka did not acknowledge a publish (the request may still be written
later: sending it again under the same msgid is safe); 3 when some got no answer within
``--timeout`` (are the services running?); 4 when the client failed otherwise (a request file
missing or not JSON, Kafka unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from yidi.client.gateway import GatewayClient, GatewayTimeout, MalformedAnswer, PublishTimeout
from yidi.contracts.envelope import DEFAULT_REPLY_TO
from yidi.domain.codes import BUSINESS_TZ

# CONTRACT.md's msgid: the facility's code (12), yyyyMMddHHmmss, a 4-digit sequence: at most
# 10,000 msgids per facility per second.
MSGIDS_PER_SECOND = 10_000
# Where this process's fresh msgids start counting: drawn at random at the first one.
_msgid_start: int | None = None
# Fields of an answer that say when it was written, not what it says (a second answer may differ in them).
ANSWER_TIMES = ("refmsg_time", "respond_time")


def read_requests(paths: list[str]) -> list[dict[str, Any]]:
    """Each file holds one JSON object, a JSON array of them, or JSON lines."""
    requests: list[dict[str, Any]] = []
    for path in paths:
        text = Path(path).read_text()
        try:
            value = json.loads(text)
            requests.extend(value if isinstance(value, list) else [value])
        except json.JSONDecodeError:
            requests.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return requests


def fresh_msgid(request: dict[str, Any], seq: int) -> str:
    """This process's ``seq``-th fresh msgid, of the contract's form: the facility's code, now
    (yyyyMMddHHmmss) and a 4-digit sequence. The sequence starts at a random number per process
    and counts up from it, so one run's msgids differ, and two runs for one facility started in
    the same second share one only if their ranges meet (about (n + m) in 10,000 for runs of n
    and m requests)."""
    # The sequence was (pid + seq) % 10000: runs with pids 41000 and 41002, three requests each,
    # started in one second, both sent ...1002 (a review, session 36).
    global _msgid_start
    if _msgid_start is None:
        _msgid_start = secrets.randbelow(MSGIDS_PER_SECOND)
    facility = str(request.get("fixmedins_code", "H00000000000"))[:12]
    # The facility's clock is China time (CONTRACT.md): a host on UTC stamped msgids 8 hours behind.
    return f"{facility}{datetime.now(BUSINESS_TZ):%Y%m%d%H%M%S}{(_msgid_start + seq) % MSGIDS_PER_SECOND:04d}"


def error_line(exc: BaseException) -> str:
    """How the CLI says a failure on stderr."""
    if isinstance(exc, GatewayTimeout | PublishTimeout):
        return str(exc)
    return f"yidi-gateway: {type(exc).__name__}: {exc}"


def summarise(request: dict[str, Any], answer: dict[str, Any]) -> str:
    """One line a cashier can read: who, what, and who pays what."""
    if "reqid" in answer:  # a filing or clearing result
        verdict = "ok" if answer.get("ok", answer.get("accepted")) else f"REFUSED: {answer.get('reason')}"
        if answer.get("note"):
            verdict += f" ({answer['note']})"
        body = answer.get("data") or answer.get("filing") or ({"history": answer["history"]} if answer.get("history") else {})
        return f"{request.get('type', request.get('action', ''))} {answer['reqid']}: {verdict} {json.dumps(body, ensure_ascii=False)[:300]}"
    data = request.get("input", {}).get("data", {})
    who = f"{answer.get('infno', '')} {data.get('psn_no', request.get('psn_no', ''))} at {request.get('fixmedins_code', '')}"
    if answer.get("infcode", 0) != 0:
        return f"{who}: REFUSED {answer.get('err_code')}: {answer.get('err_msg')}"
    if lines := answer.get("output", {}).get("cumoutput"):  # 5206: what is left of each limit
        year = answer["output"].get("cuminfo", {}).get("year", "")
        left = "; ".join(
            f"{x['cum_type_code']}{' ' + (x['bucket'] or x['fund_pay_type']) if x['bucket'] or x['fund_pay_type'] else ''} "
            f"used {x['used']}" + (f" ({x['used_at_home']} at home)" if x.get("used_at_home", "0.00") != "0.00" else "")
            + (f" of {x['limit']}, left {x['left']}" if x["limit"] is not None else "")
            for x in lines)
        return f"{who}: year {year}: {left}"
    info = answer.get("output", {}).get("setlinfo")
    if not info:
        return f"{who}: ok {json.dumps(answer.get('output', {}), ensure_ascii=False)[:120]}"
    if "medfee_sumamt" not in info:
        return f"{who}: ok, settlement {info.get('setl_id')} {info.get('state', '')}"
    return (
        f"{who}: total {info['medfee_sumamt']}, funds pay {info['fund_pay_sumamt']} "
        f"(pooled {info['hifp_pay']} at ratio {info['pool_prop_selfpay']}), account {info['acct_pay']}, "
        f"cash {info['psn_cash_pay']}  [{info['setl_id'] or 'pre-settlement'}]"
    )


async def _send(args: argparse.Namespace, *, topic: str, reply_to: str, correlate_by: str) -> int:
    requests = read_requests(args.files)
    if correlate_by == "msgid":
        # One reply topic per run: the client listens on it, so every request names it.
        reply_to = args.reply_to or str(requests[0].get("reply_to") or DEFAULT_REPLY_TO)
        for r in requests:
            r["reply_to"] = reply_to
    renamed = args.new_msgid and correlate_by == "msgid"
    was: list[Any] = []
    if renamed:
        if len(requests) > MSGIDS_PER_SECOND:
            raise ValueError(f"--new-msgid gives at most {MSGIDS_PER_SECOND} msgids per facility per second "
                             f"(CONTRACT.md's 4-digit sequence): send these {len(requests)} requests in smaller runs")
        for i, r in enumerate(requests):
            was.append(r.get("msgid"))
            r["msgid"] = fresh_msgid(r, i)
            data = r.get("input", {}).get("data") if isinstance(r.get("input"), dict) else None
            if isinstance(data, dict) and "feedetail" in data:
                # A new settlement of the bill is a new visit: a visit is settled once (ALREADY_SETTLED).
                data["mdtrt_id"] = f"V{r['msgid']}"
    ours = {str(r.get(correlate_by)) for r in requests}
    first_answers: dict[str, dict[str, Any]] = {}

    def on_answer(answer: dict[str, Any], _timestamp: int) -> None:
        # A second answer to one request that differed from the first (another setl_id,
        # ALREADY_UNDONE) went unreported (a review, session 36).
        key = str(answer.get(correlate_by, ""))
        if key not in ours:
            return
        first = first_answers.setdefault(key, answer)
        if first is not answer and _without_times(first) != _without_times(answer):
            print(f"yidi-gateway: warning: a second answer to {correlate_by} {key} differs from the first: "
                  f"{json.dumps(answer, ensure_ascii=False)[:300]}", file=sys.stderr)

    failures = unanswered = 0
    sent: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
    publish_error: Exception | None = None
    async with GatewayClient(
        args.bootstrap, reply_to=reply_to, request_topic=topic, namespace=args.namespace, correlate_by=correlate_by,
        on_answer=on_answer,
    ) as gw:
        for n, r in enumerate(requests, 1):
            try:
                sent.append((r, await gw.send(r)))
            except Exception as exc:  # noqa: BLE001 - said below, once the requests already published are answered
                # The CLI exited at once: the requests published before this one (maybe settled) were
                # neither awaited nor named, and with --new-msgid their msgids were printed nowhere, so a
                # re-run settled them again (a review, session 36).
                publish_error = exc
                break
            if renamed:
                print(f"published {r['msgid']} (request {n} of {len(requests)}, new msgid for {was[n - 1]})",
                      file=sys.stderr)
        if publish_error is not None:
            print(error_line(publish_error), file=sys.stderr)
            published = " ".join(str(r.get(correlate_by)) for r, _ in sent) or "none"
            print(f"yidi-gateway: {len(sent)} of {len(requests)} requests published before the failure: {published}; "
                  f"{len(requests) - len(sent) - 1} after it not sent"
                  + ("; waiting for the answers of those published" if sent else ""), file=sys.stderr)
        for request, fut in sent:
            try:
                answer = await asyncio.wait_for(fut, args.timeout)
            except TimeoutError:
                gw.forget(str(request.get(correlate_by)), fut)
                print(f"no answer to {request.get(correlate_by)} within {args.timeout:.0f}s", file=sys.stderr)
                unanswered += 1
                continue
            except MalformedAnswer as exc:
                print(f"yidi-gateway: {exc}", file=sys.stderr)
                failures += 1
                continue
            if args.summary:
                print(summarise(request, answer))
            else:
                print(json.dumps(answer, ensure_ascii=False, indent=None if args.compact else 2))
            if answer.get("infcode", 0) != 0 or answer.get("accepted") is False or answer.get("ok") is False:
                failures += 1
    if publish_error is not None:
        return 2 if isinstance(publish_error, PublishTimeout) else 4
    return 3 if unanswered else 1 if failures else 0


def _without_times(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in ANSWER_TIMES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="yidi-gateway", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("YIDI_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--namespace", default=os.environ.get("YIDI_NAMESPACE", ""))
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for each answer")
    parser.add_argument("--compact", action="store_true", help="one answer per line")
    parser.add_argument("--summary", action="store_true", help="one readable line per answer")
    sub = parser.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send", help="send settlement requests (settlement.requests)")
    send.add_argument("files", nargs="+")
    send.add_argument("--reply-to", default=None,
                      help="the reply topic written into every request and read for the answers "
                           "(default: the first request's reply_to, or settlement.results)")
    send.add_argument("--new-msgid", action="store_true",
                      help="give each request a fresh msgid (and a bill a fresh visit id V<msgid>: a new "
                           "settlement), printed on stderr as it is published. The contract's msgid form "
                           "(facility code, yyyyMMddHHmmss, 4 digits) allows 10,000 per facility per second: "
                           "a run starts its 4 digits at random and counts up, so runs for one facility "
                           "started in the same second may share one (about (n + m) in 10,000 for n and m "
                           "requests; the second is refused MODIFIED_REQUEST). At most 10,000 requests a run.")
    filing = sub.add_parser("file", help="send filing requests (filing.requests)")
    filing.add_argument("files", nargs="+")
    clearing = sub.add_parser("clearing", help="send clearing requests: fund, run_month, confirm, queries (clearing.requests)")
    clearing.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "send":
            code = asyncio.run(_send(args, topic="settlement.requests", reply_to=DEFAULT_REPLY_TO, correlate_by="msgid"))
        else:
            args.new_msgid, args.reply_to = False, None
            topic = "filing" if args.command == "file" else "clearing"
            code = asyncio.run(_send(args, topic=f"{topic}.requests", reply_to=f"{topic}.results", correlate_by="reqid"))
    except (GatewayTimeout, PublishTimeout) as exc:
        print(error_line(exc), file=sys.stderr)
        code = 2
    except Exception as exc:  # noqa: BLE001 - said in one line and an exit status of its own, not 1 ("refused")
        print(error_line(exc), file=sys.stderr)
        code = 4
    sys.exit(code)


if __name__ == "__main__":
    main()
