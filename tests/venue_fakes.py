"""Local stand-ins for perp venues' public APIs.

Hyperliquid `POST /info` answers only what was recorded from the real API
(tests/data/hyperliquid, copied from ../shared/data: clearinghouseState of one account,
meta); other request types get
the 422 the real endpoint gives a body it cannot deserialize. dYdX v4's indexer has no
recording here: its answers are built in the tests from the documented response format and are
labelled as such.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

# A copy of ../shared/data/hyperliquid (the recorded answers and their README), kept in the
# repository so a checkout anywhere has them.
HL_DATA = Path(__file__).resolve().parent / "data" / "hyperliquid"
HL_USER = "0x5e9ee1089755c3435139848e47e6635505d5a13a"
EMPTY_STATE = {"assetPositions": [], "crossMarginSummary": {
    "accountValue": "0.0", "totalMarginUsed": "0.0", "totalNtlPos": "0.0",
    "totalRawUsd": "0.0"}, "marginSummary": {"accountValue": "0.0", "totalMarginUsed": "0.0",
                                             "totalNtlPos": "0.0", "totalRawUsd": "0.0"},
    "withdrawable": "0.0"}


def recorded(name: str) -> Any:
    return json.loads((HL_DATA / name).read_text())


def asset_contexts() -> list[dict[str, Any]]:
    """`metaAndAssetCtxs`' second half for the recorded meta, in the documented shape. No
    recording exists: each held coin's mark is the recorded account's own valuation
    (positionValue / |szi|, so its health is the recording's), the others' made up (1.0).
    A test changes an entry in place to make the venue answer otherwise."""
    state = recorded("clearinghouseState_2023-03-27.json")
    marks = {p["position"]["coin"]: float(p["position"]["positionValue"])
             / abs(float(p["position"]["szi"])) for p in state["assetPositions"]}
    return [{"funding": "0.0", "openInterest": "1000.0", "markPx": repr(marks.get(c["name"], 1.0)),
             "oraclePx": repr(marks.get(c["name"], 1.0)), "prevDayPx": "1.0"}
            for c in recorded("meta_2023-07-17.json")["universe"]]


def hyperliquid_app(log: list[dict[str, Any]] | None = None,
                    script: list[Callable[[], web.Response]] | None = None,
                    state_fields: dict[str, Any] | None = None,
                    dexes: dict[str, tuple[Any, Any]] | None = None,
                    contexts: list[dict[str, Any]] | None = None,
                    states: dict[str, Any] | None = None) -> web.Application:
    """`state_fields`: fields added to the recorded clearinghouseState, each named by the
    test that adds it (the 2023 recording predates e.g. `crossMaintenanceMarginUsed`).
    `contexts`: served as `metaAndAssetCtxs` with the recorded meta (read at each request:
    a test may change it between polls; without it the request type gets the 422).
    `states`: other users' clearinghouseState (lower-case user -> answer)."""
    state = {**recorded("clearinghouseState_2023-03-27.json"), **(state_fields or {})}
    meta = recorded("meta_2023-07-17.json")

    async def info(request: web.Request) -> web.Response:
        body = await request.json()
        if log is not None:
            log.append(body)
        if script:
            return script.pop(0)()
        kind = body.get("type")
        dex = body.get("dex")
        if dex:  # a builder-deployed dex: (meta, state of HL_USER) given by the test
            if dex not in (dexes or {}) or kind not in ("meta", "clearinghouseState"):
                return web.Response(status=422, text="Failed to deserialize the JSON body "
                                                     "into the target type")
            dex_meta, dex_state = (dexes or {})[dex]
            if kind == "meta":
                return web.json_response(dex_meta)
            user = str(body.get("user", "")).lower()
            return web.json_response(dex_state if user == HL_USER else EMPTY_STATE)
        if kind == "meta":
            return web.json_response(meta)
        if kind == "metaAndAssetCtxs" and contexts is not None:
            return web.json_response([meta, contexts])
        if kind == "clearinghouseState":
            user = str(body.get("user", "")).lower()
            return web.json_response(state if user == HL_USER else
                                     (states or {}).get(user, EMPTY_STATE))
        return web.Response(status=422, text="Failed to deserialize the JSON body into the "
                                             "target type")

    app = web.Application()
    app.router.add_post("/info", info)
    return app


def dydx_app(markets: dict[str, Any], subaccounts: dict[tuple[str, int], Any]
             ) -> web.Application:
    async def perpetual_markets(_: web.Request) -> web.Response:
        return web.json_response({"markets": markets})

    async def subaccount(request: web.Request) -> web.Response:
        key = (request.match_info["address"], int(request.match_info["number"]))
        if key not in subaccounts:
            return web.json_response({"errors": [{"msg": "No subaccount found with address "
                                                  f"{key[0]} and subaccountNumber {key[1]}"}]},
                                     status=404)
        return web.json_response({"subaccount": subaccounts[key]})

    async def parent(request: web.Request) -> web.Response:
        """The documented ParentSubaccountResponseObject: the parent's totals and every
        subaccount n + 128k of the address (built here from `subaccounts`, not recorded)."""
        address, n = request.match_info["address"], int(request.match_info["number"])
        children = [s for (a, k), s in sorted(subaccounts.items()) if a == address
                    and k % 128 == n]
        if not children:
            return web.json_response({"errors": [{"msg": "No subaccount found"}]}, status=404)
        equity = sum(float(c["equity"]) for c in children)
        free = sum(float(c["freeCollateral"]) for c in children)
        return web.json_response({"subaccount": {
            "address": address, "parentSubaccountNumber": n, "equity": str(equity),
            "freeCollateral": str(free), "childSubaccounts": children}})

    app = web.Application()
    app.router.add_get("/v4/perpetualMarkets", perpetual_markets)
    app.router.add_get("/v4/addresses/{address}/subaccountNumber/{number}", subaccount)
    app.router.add_get("/v4/addresses/{address}/parentSubaccountNumber/{number}", parent)
    return app
