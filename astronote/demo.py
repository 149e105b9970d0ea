"""`astronote demo`: one campaign end to end on the local stack, then an honest report.

The stack (web, worker, clock, simulator) runs in the background (`astronote.launcher`), each
process logging to var/demo-logs/<name>.log. The demo talks to it only through the REST
API and the simulator's `/_sim/` endpoints, as a merchant and an operator would, and exits 0
only when the campaign completed, every recipient was resolved, the provider saw no message
twice and the credit ledger balances.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from astronote import launcher
from astronote import stack as local
from astronote.stack import LocalStack

LOG_DIR = local.VAR_DIR / "demo-logs"
TEXT = "Spring sale: 20% off at https://shop.example/spring - see you soon!"
PERSONALISED_TEXT = (
    "Hi {first_name}, spring sale: 20% off at https://shop.example/spring - see you soon!"
)
FIRST_NAMES = ("Maria", "Nikos", "Eleni", "Giorgos", "Sofia", "Kostas", "Anna", "Dimitris")
CREDITS_PER_RECIPIENT = 10  # well above the reservation's upper bound for these texts
FINISHED = ("completed", "failed", "cancelled")
FINAL_DELIVERY = ("Delivered", "Undelivered", "Failed", "Expired")
POLL_S = 0.2
STALL_AFTER_S = 120
DELIVERY_WAIT_S = 20
SIM_OPTIONS = ("--dlr-batch", "100")
SENDER = "DemoShop"
# The shop requires consent (every new shop does): the demo's contacts opted in at checkout.
CONSENT = {
    "source": "checkout",
    "collected_at": "2024-01-01T00:00:00Z",
    "proof": "demo: the SMS box ticked at checkout",
}


class DemoFailure(Exception):
    """The demo cannot go on, or its outcome is wrong; the message says why."""


class Api:
    """The REST API as one bearer-token holder sees it."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = self.session.request(method, f"{self.base_url}{path}", timeout=60, **kwargs)
        if answer.status_code != expect:
            raise DemoFailure(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def pages(self, path: str) -> list[dict]:
        items, after = [], None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            page = self.call("GET", path, params=params)
            items.extend(page["items"])
            after = page["next"]
            if after is None:
                return items


class BackgroundStack:
    """The stack's processes (`astronote.stack.StackProcesses`), each in its own session;
    `stop()` ends all of them."""

    def __init__(self, stack: LocalStack, log_dir: Path) -> None:
        self.stack, self.log_dir = stack, log_dir.resolve()
        self.group = launcher.ProcessGroup(self.log_dir)
        self.launch = stack.processes(self.group)
        self.processes = self.launch.commands(SIM_OPTIONS)

    def start(self) -> None:
        self.launch.start_all(SIM_OPTIONS)

    def check_running(self) -> None:
        exited = self.group.exited()
        if exited is not None:
            name, status = exited
            raise DemoFailure(f"{name} exited with status {status}; see {self.log_dir / name}.log")

    def stop(self) -> None:
        self.group.stop_all(grace=5)


def wait_until_ready(url: str, what: str, timeout: float, background: BackgroundStack) -> None:
    try:
        background.launch.wait_until_answering(
            url, what, timeout, interval=0.2, watch=background.check_running, request_timeout=2
        )
    except TimeoutError:
        raise DemoFailure(
            f"{what} did not answer within {timeout:.0f} s; see {background.log_dir}/"
        ) from None


@dataclass
class Shop:
    id: int
    api: Api
    top_up: int


def create_shop(stack: LocalStack, credits: int) -> Shop:
    admin = Api(stack.web_url, stack.admin_token)
    domain = f"demo-{uuid.uuid4().hex[:10]}.example"
    # No quiet hours: the demo sends its Greek numbers whatever the hour it is run at (a shop
    # gets 21:00-08:00 by default, and the campaign would wait for the morning).
    shop = admin.call(
        "POST",
        "/admin/shops",
        201,
        json={"domain": domain, "name": "Demo Shop", "sender": SENDER, "quiet_hours": None},
    )
    admin.call(
        "POST",
        f"/admin/shops/{shop['id']}/credits",
        201,
        json={"amount": credits, "reference": "demo-top-up"},
    )
    return Shop(shop["id"], Api(stack.web_url, shop["api_key"]), credits)


def import_contacts(shop: Shop, count: int) -> None:
    for offset in range(0, count, 10_000):
        chunk = [
            {
                "phone": f"+30690{i:07d}",
                "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
                "consent": CONSENT,
            }
            for i in range(offset, min(count, offset + 10_000))
        ]
        answer = shop.api.call("POST", "/contacts", json={"contacts": chunk})
        if answer["invalid"]:
            raise DemoFailure(f"contacts rejected: {answer['invalid'][:3]}")


def follow_progress(shop: Shop, campaign_id: int, total: int, background: BackgroundStack) -> dict:
    """A live bar of resolved recipients until the campaign finishes (or stops moving)."""
    last_done, last_change = -1, time.monotonic()
    with tqdm(total=total, unit="msg", desc="sending", dynamic_ncols=True) as bar:
        while True:
            progress = shop.api.call("GET", f"/campaigns/{campaign_id}/progress")
            done = progress["sent"] + progress["failed"] + progress["skipped"]
            bar.update(done - bar.n)
            bar.set_postfix(status=progress["status"], refresh=False)
            if progress["status"] in FINISHED:
                return progress
            if done != last_done:
                last_done, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > STALL_AFTER_S:
                raise DemoFailure(
                    f"campaign {campaign_id} made no progress for {STALL_AFTER_S} s"
                    f" ({done}/{total} resolved, status {progress['status']})"
                )
            background.check_running()
            time.sleep(POLL_S)


def wait_for_delivery_reports(shop: Shop, campaign_id: int, sent: int) -> dict:
    """Progress once every sent message has a final delivery status, or after a short wait."""
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while True:
        progress = shop.api.call("GET", f"/campaigns/{campaign_id}/progress")
        final = sum(progress["delivery"].get(status, 0) for status in FINAL_DELIVERY)
        if final >= sent or time.monotonic() > deadline:
            return progress
        time.sleep(POLL_S)


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok


def ledger_lines(shop: Shop, progress: dict, balance_before: int, outcome: Outcome) -> None:
    """Balance after == top-up - debits, one debit per sent message, reservation released."""
    credits = shop.api.call("GET", "/credits")
    ledger = shop.api.pages("/credits/transactions")
    debits = [row["amount"] for row in ledger if row["kind"] == "debit"]
    debited, balance, c = -sum(debits), credits["balance"], progress["credits"]
    outcome.lines += [
        f"credits:    reserved {c['reserved']}, consumed {c['consumed']}, released {c['released']}",
        f"balance:    before {balance_before}, after {balance} (top-up {shop.top_up},"
        f" {len(debits)} debits totalling {debited}, still reserved {credits['reserved']})",
    ]
    mismatches = [
        problem
        for ok, problem in (
            (
                balance == shop.top_up - debited,
                f"balance {balance} != top-up {shop.top_up} - debits {debited}",
            ),
            (balance == sum(row["amount"] for row in ledger), "balance != sum of the ledger"),
            (
                balance_before - balance == debited,
                f"balance fell by {balance_before - balance} but debits total {debited}",
            ),
            (len(debits) == progress["sent"], f"{len(debits)} debits for {progress['sent']} sent"),
            (debited == c["consumed"], f"debits {debited} != reservation consumed {c['consumed']}"),
            (
                credits["reserved"] == 0 and c["released"] == c["reserved"] - c["consumed"],
                f"reservation not released ({credits['reserved']} still reserved)",
            ),
        )
        if not ok
    ]
    if mismatches:
        outcome.lines.append(f"ledger: MISMATCH ({'; '.join(mismatches)})")
        outcome.problems += mismatches
    else:
        outcome.lines.append(
            f"ledger: OK (balance {balance} = top-up {shop.top_up} - debits"
            f" {debited}; one debit per sent message; reservation released)"
        )


def report(
    stack: LocalStack,
    shop: Shop,
    campaign_id: int,
    total: int,
    balance_before: int,
    send_seconds: float,
) -> Outcome:
    progress = wait_for_delivery_reports(
        shop, campaign_id, shop.api.call("GET", f"/campaigns/{campaign_id}/progress")["sent"]
    )
    outcome = Outcome()
    resolved = progress["sent"] + progress["failed"] + progress["skipped"]
    delivery = ", ".join(f"{k} {v}" for k, v in sorted(progress["delivery"].items())) or "none"
    outcome.lines += [
        f"campaign:   #{campaign_id} {progress['status']}"
        + (f" ({progress['status_reason']})" if progress.get("status_reason") else ""),
        f"recipients: {total} total: sent {progress['sent']}, failed {progress['failed']},"
        f" skipped {progress['skipped']}, pending {progress['pending']},"
        f" sending {progress['sending']}",
        f"delivery:   {delivery}",
    ]
    outcome.check(progress["status"] == "completed", f"campaign is {progress['status']}")
    outcome.check(
        resolved == total == progress["total"],
        f"only {resolved} of {total} recipients are sent/failed/skipped",
    )
    ledger_lines(shop, progress, balance_before, outcome)
    sim = requests.get(f"{stack.sim_url}/_sim/messages", params={"summary": 1}, timeout=60).json()
    outcome.lines.append(
        f"provider:   {sim['count']} messages accepted by the simulator,"
        f" {sim['duplicate_messages']} duplicates"
    )
    outcome.check(
        sim["duplicate_messages"] == 0,
        f"the provider got {sim['duplicate_messages']} messages twice",
    )
    outcome.check(
        sim["count"] == progress["sent"],
        f"the provider accepted {sim['count']} messages but {progress['sent']} are sent",
    )
    outcome.lines.append(
        f"throughput: {total / send_seconds:.0f} recipients/s"
        f" ({total} in {send_seconds:.1f} s, enqueue to completed)"
    )
    return outcome


def run_campaign(
    stack: LocalStack, background: BackgroundStack, recipients: int, personalised: bool
) -> Outcome:
    shop = create_shop(stack, recipients * CREDITS_PER_RECIPIENT)
    print(f"shop #{shop.id} topped up with {shop.top_up} credits; importing {recipients} contacts")
    import_contacts(shop, recipients)
    text = PERSONALISED_TEXT if personalised else TEXT
    campaign = shop.api.call("POST", "/campaigns", 201, json={"name": "Spring sale", "text": text})
    balance_before = shop.api.call("GET", "/credits")["balance"]
    print(f"campaign #{campaign['id']}: {text!r}")
    started = time.monotonic()
    enqueued = shop.api.call("POST", f"/campaigns/{campaign['id']}/enqueue", 202)
    print(
        f"enqueued {enqueued['recipients']} recipients, {enqueued['reserved_credits']} credits"
        " reserved",
        flush=True,
    )
    try:
        follow_progress(shop, campaign["id"], enqueued["recipients"], background)
    except BaseException:
        cancel_quietly(shop, campaign["id"])
        raise
    send_seconds = time.monotonic() - started
    outcome = report(
        stack, shop, campaign["id"], enqueued["recipients"], balance_before, send_seconds
    )
    reply_stop(stack, shop, outcome)
    return outcome


def reply_stop(stack: LocalStack, shop: Shop, outcome: Outcome) -> None:
    """The first customer replies STOP (the simulator forwards it to the inbound webhook): the
    number is opted out, answered once, and no credit is taken for the answer."""
    phone = "+306900000000"
    balance = shop.api.call("GET", "/credits")["balance"]
    answer = requests.post(
        f"{stack.sim_url}/_sim/inbound",
        timeout=60,
        json={"from": phone.lstrip("+"), "to": SENDER, "text": "STOP"},
    ).json()
    body = (answer.get("answers") or [{}])[0].get("body") or {}
    opted_out = [item["phone"] for item in shop.api.pages("/contacts?opted_out=true")]

    def answers_sent() -> int:  # the campaign's message was the first
        messages = requests.get(f"{stack.sim_url}/_sim/messages", params={"to": phone}, timeout=60)
        return int(messages.json()["count"]) - 1

    # The answer is the worker's to send (queued by the webhook): wait for it, then a moment
    # more for any second one.
    deadline = time.monotonic() + 15
    while answers_sent() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    answered = answers_sent()
    ok = (
        body.get("keyword") == "stop"
        and opted_out == [phone]
        and answered == 1
        and shop.api.call("GET", "/credits")["balance"] == balance
    )
    outcome.lines.append(
        f"compliance: {phone} replied STOP: "
        + (
            "opted out, answered once, nothing charged"
            if ok
            else f"NOT handled ({body or answer}, opted out {opted_out}, {answered} answers)"
        )
    )
    outcome.check(ok, "a STOP reply was not handled")


def cancel_quietly(shop: Shop, campaign_id: int) -> None:
    """An abandoned demo campaign would otherwise resume on the next start of ./var/."""
    try:
        answer = shop.api.session.post(
            f"{shop.api.base_url}/campaigns/{campaign_id}/cancel", timeout=5
        )
    except requests.RequestException:
        return
    if answer.ok:
        print(f"\ncampaign #{campaign_id} cancelled", file=sys.stderr)


def _died(background: BackgroundStack | None) -> str | None:
    """Which process died, when one did (a lost connection usually means that)."""
    try:
        if background is not None:
            time.sleep(1)  # a process that dropped the connection may still be exiting
            background.check_running()
    except DemoFailure as failure:
        return str(failure)
    return None


def _raise_system_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run(recipients: int = 3000, personalised: bool = False) -> int:
    """Run the demo; 0 when the campaign completed with exact books, else 1 with the reason."""
    if recipients < 1:
        print("demo: --recipients must be at least 1", file=sys.stderr)
        return 2
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _raise_system_exit)  # so `finally` stops every child
    stack: LocalStack | None = None
    background: BackgroundStack | None = None
    try:
        stack = local.prepare()
        background = BackgroundStack(stack, LOG_DIR)
        print("astronote demo: starting the stack in the background")
        for line in local.describe(stack, background.processes):
            print(f"  {line}")
        print(f"  logs:       {background.log_dir}/", flush=True)
        background.start()
        wait_until_ready(f"{stack.web_url}/health", "the API", 60, background)
        wait_until_ready(f"{stack.sim_url}/_sim/health", "the simulator", 30, background)
        print(f"stack ready after {time.monotonic() - began:.1f} s", flush=True)
        outcome = run_campaign(stack, background, recipients, personalised)
    except DemoFailure as failure:
        print(f"demo FAILED: {failure}", file=sys.stderr)
        return 1
    except requests.RequestException as error:
        print(f"demo FAILED: {_died(background) or f'lost the API: {error}'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the stack", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave processes behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if background is not None:
            background.stop()
        if stack is not None:
            stack.close()
    print("\n== report ==")
    for line in outcome.lines:
        print(line)
    print(f"wall time:  {time.monotonic() - began:.1f} s (start-up and shutdown included)")
    if outcome.problems:
        print(f"result: FAILED: {'; '.join(outcome.problems)}")
        return 1
    print("result: OK")
    return 0
