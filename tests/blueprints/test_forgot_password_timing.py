"""Forgot-password answers as fast for an address with an account as for one without."""

import gc
import statistics
import time

import pytest
from sqlalchemy import func, select

from storefront.models import OutboxEmail
from tests.fixtures_accounts import background_work_done, post_form

SAMPLES = 40
ATTEMPTS = 3
# The old answer rendered three templates and wrote an outbox row only for known addresses:
# known answers took 1.5-3.5 ms longer (median) on this 2-core machine.
MAX_PAIR_GAP_SECONDS = 0.0008
MAX_MEDIAN_GAP_SECONDS = 0.0012
KNOWN = "has.account@example.com"
UNKNOWN = "no.account@example.com"


@pytest.fixture(name="app_overrides")
def _app_overrides():
    return {"RATELIMIT_ENABLED": False}


async def _answer_seconds(client, email: str) -> float:
    started = time.perf_counter()
    response = await post_form(client, "/password/forgot", {"email": email})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    # The queued work is not part of the answer; keep it out of the next sample.
    await background_work_done(client.app)
    return elapsed


async def _timing_gaps(client) -> tuple[float, float, str]:
    """(median of back-to-back pair differences, difference of medians, a report) over
    interleaved known/unknown samples, alternating who goes first so drift hits both alike."""
    known: list[float] = []
    unknown: list[float] = []
    gc.disable()  # a collection landing in one sample is noise, not signal
    try:
        for sample in range(SAMPLES):
            pair = [(KNOWN, known), (UNKNOWN, unknown)]
            for email, samples in pair if sample % 2 == 0 else reversed(pair):
                samples.append(await _answer_seconds(client, email))
    finally:
        gc.enable()
    pair_gap = statistics.median(k - u for k, u in zip(known, unknown, strict=True))
    median_gap = statistics.median(known) - statistics.median(unknown)
    report = (
        f"median known {statistics.median(known) * 1000:.2f} ms, "
        f"unknown {statistics.median(unknown) * 1000:.2f} ms, "
        f"median pair gap {pair_gap * 1000:.2f} ms"
    )
    return pair_gap, median_gap, report


@pytest.mark.both_databases
async def test_forgot_password_timing_does_not_tell_which_emails_have_accounts(
    client, session, make_user
):
    await make_user(email=KNOWN)
    for email in (KNOWN, UNKNOWN):
        await _answer_seconds(client, email)  # warm-up: template and statement caches
    # A loaded machine can drown one run in noise; a real gap shows in every run (the old
    # code's did), so one clean run out of three is the evidence.
    reports = []
    for _ in range(ATTEMPTS):
        pair_gap, median_gap, report = await _timing_gaps(client)
        reports.append(report)
        if abs(pair_gap) < MAX_PAIR_GAP_SECONDS and abs(median_gap) < MAX_MEDIAN_GAP_SECONDS:
            break
    else:
        pytest.fail("known and unknown addresses answer in different times: " + "; ".join(reports))
    # The link is still sent (once: the reset window dedupes the repeats).
    queued = await session.scalar(select(func.count(OutboxEmail.id)))
    await session.commit()
    assert queued == 1
