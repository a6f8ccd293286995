"""`Devnet`: one running devnet (anvil loaded with the built state) and the helpers the tests,
the demo and the benchmarks use to move it: set a price, mine, advance time, snapshot/revert.

    with Devnet(accounts=300) as devnet:
        devnet.manifest["aave_v3"]["pool"]
        devnet.set_price("WETH", 2100.0)
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from keeperd.chain.multicall import encode_call
from keeperd.devnet import contracts
from keeperd.devnet.aave import PRICE_DECIMALS
from keeperd.devnet.anvil import Anvil
from keeperd.devnet.client import DevnetClient, DevnetRpcError
from keeperd.devnet.solc import compile_project_contracts
from keeperd.devnet.state import DEFAULT_AAVE, DEFAULT_ACCOUNTS, DEFAULT_SEED, ensure_state

# Walks of Curie's mark (`curie.walk_mark`: 40 steps of 16 s of chain time each) a price move
# may take. A fall settles within one; a rise never did: the mark is a median whose third term
# is index + (15-min pool TWAP - 15-min index TWAP), and it reached the new index only once
# ~950 s of chain time had passed (measured on 3000 -> 3900, 2100 -> 3000, WBTC 40k -> 60k:
# two walks each). A third is margin.
MARK_WALKS = 3


class PriceWalkError(RuntimeError):
    """Curie's mark did not follow a price move; the message says what to do."""


# The oldest a devnet feed's round may be after a devnet command: well inside the shortest
# heartbeat a config sets (an hour, example.yaml's and Chainlink's volatile feeds).
FRESH_FEED_S = 600
MINE_RUN = 250  # blocks per anvil_mine call (`DevnetControl.mine`)
MOVE_GAS = 200_000  # a feed's round, a Morpho oracle's price: sent unestimated in one block
# A move's receipt is waited for this long after its block before it is looked into
# (`_until_mined`), in this many blocks at most
MOVE_RECEIPT_S, MOVE_ATTEMPTS = 10.0, 3
# The pools' alignment: every pool's reads through the oracle's sources, a swap where one
# moved (a crash moves a handful; well under a block's gas for the devnet's ~20 pools)
ALIGN_GAS_BASE, ALIGN_GAS_PER_POOL = 100_000, 250_000


class DevnetControl:
    """Moves a running devnet, given its manifest (which holds `rpc_url`)."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self.client = DevnetClient(manifest["rpc_url"])
        compiled = compile_project_contracts(["TestAggregator.sol"])["TestAggregator"]
        self._aggregator = contracts.from_compiled("TestAggregator", compiled.abi,
                                                  compiled.bytecode)

    def _feed(self, symbol: str) -> str:
        feeds = self.manifest["price_feeds"]
        if symbol not in feeds:
            raise KeyError(f"no price feed for {symbol!r}; the devnet has {sorted(feeds)}")
        return str(feeds[symbol])

    def set_price(self, symbol: str, usd: float, *, walk_perps: bool = False) -> None:
        """Move the asset's price for every protocol on the devnet: a new round on its
        aggregator (Aave's oracle, and the adapters built on it, follow at once) and the
        oracle of every Morpho Blue market that prices it. With `walk_perps`, Perp Curie's
        market of the asset follows too: its index at once, its mark walked to it by trades
        and chain time (several blocks, 16 s apart: `curie.walk_mark`)."""
        moves = self._price_moves(symbol, usd)  # (an unknown symbol fails first)
        admin = self.manifest["aave_v3"]["admin"]
        if len(moves) > 1 and self.client.call("anvil_getAutomine"):
            self._in_one_block(admin, moves)
        else:
            for to, data, gas in moves:
                self.client.send(admin, to, data, gas=gas)
        if walk_perps:
            self._walk_mark(symbol, usd)

    def _in_one_block(self, sender: str, moves: list[tuple[str, bytes, int | None]]) -> None:
        """Send `moves` and mine them in one block. A feed and the Morpho oracles of its asset
        move together on a chain (a MorphoChainlinkOracleV2 reads the feed); mined one a
        block, keeperd judged a block where they disagreed, tripped the market's breaker on
        the deviation and sent a critical oracle alert, by hand on one move in three."""
        self.client.call("evm_setAutomine", False)
        hashes: list[str] = []
        try:
            for to, data, gas in moves:
                hashes.append(self._send_move(sender, to, data, gas))
            self.client.mine(1)
        except BaseException:
            # (half a move left in the pool would be mined with the next transaction: the
            # split this method is for)
            for tx_hash in hashes:
                with contextlib.suppress(Exception):
                    self.client.call("anvil_dropTransaction", tx_hash)
            raise
        finally:
            self.client.call("evm_setAutomine", True)
        self._until_mined(sender, list(zip(hashes, moves, strict=True)))

    def _send_move(self, sender: str, to: str, data: bytes, gas: int | None) -> str:
        return str(self.client.call("eth_sendTransaction", {
            "from": sender, "to": to, "data": "0x" + data.hex(),
            "gas": hex(gas or MOVE_GAS)}))

    def _until_mined(self, sender: str,
                     sent: list[tuple[str, tuple[str, bytes, int | None]]]) -> None:
        """Every move's receipt, successful. One the block left out is not waited on for
        good: a daemon sending beside a move (the crash-point test's keeperd, a user's) once
        left a move with no receipt for a minute, in CI, once in hundreds of runs (neither
        mined nor, with automine back on, ever mined). The missing moves are dropped and sent
        again in their order, in the next block (a feed's round, an oracle's price and the
        pools' alignment set a price: sent twice they set it once), said on stderr with
        what the node said of each."""
        for attempt in range(MOVE_ATTEMPTS):
            missing, deadline = list(sent), time.monotonic() + MOVE_RECEIPT_S
            while missing and time.monotonic() < deadline:
                receipts = [self.client.call("eth_getTransactionReceipt", h) for h, _ in missing]
                for (tx_hash, _), receipt in zip(missing, receipts, strict=True):
                    if receipt is not None and int(receipt["status"], 16) != 1:
                        raise DevnetRpcError(f"price move {tx_hash} reverted: "
                                             f"{self.client.revert_reason(tx_hash)}")
                missing = [m for m, r in zip(missing, receipts, strict=True) if r is None]
                if missing:
                    time.sleep(0.01)
            if not missing:
                return
            if attempt == MOVE_ATTEMPTS - 1:
                break
            known = {h: self.client.call("eth_getTransactionByHash", h) for h, _ in missing}
            for tx_hash, _ in missing:
                print(f"keeperd devnet: price move {tx_hash} not mined in its block "
                      f"({self._why_unmined(known[tx_hash])}); sent again", file=sys.stderr)
            # Every missing move dropped and sent again, in its order, at today's fees: one
            # the node dropped leaves the later ones behind a nonce gap, and one priced
            # under a base fee that rose meanwhile would never be mined as it is.
            self.client.call("evm_setAutomine", False)
            sent = []
            try:
                for tx_hash, _ in missing:
                    if known[tx_hash]:
                        self.client.call("anvil_dropTransaction", tx_hash)
                for _, move in missing:
                    sent.append((self._send_move(sender, *move), move))
                self.client.mine(1)
            except BaseException:
                for tx_hash, _ in sent:
                    with contextlib.suppress(Exception):
                        self.client.call("anvil_dropTransaction", tx_hash)
                raise
            finally:
                self.client.call("evm_setAutomine", True)
        raise DevnetRpcError(f"price moves {[h for h, _ in sent]} not mined in "
                             f"{MOVE_ATTEMPTS} blocks")

    def _why_unmined(self, tx: dict[str, Any] | None) -> str:
        if tx is None:
            return "the node no longer knows it"
        head = self.client.call("eth_getBlockByNumber", "latest", False) or {}
        return (f"still in the pool: nonce {int(tx.get('nonce', '0x0'), 16)}, max fee "
                f"{int(tx.get('maxFeePerGas') or tx.get('gasPrice') or '0x0', 16)} against the "
                f"head's base fee {int(head.get('baseFeePerGas', '0x0'), 16)}")

    def _walk_mark(self, symbol: str, usd: float) -> None:
        """Walk Curie's mark to the new index, for as many walks as it takes (MARK_WALKS).
        A long walk moves chain time by a quarter hour or more: every feed then gets a new
        round at its price (`refresh_feeds`), so none grows stale under keeperd's heartbeat
        check after a few moves."""
        from keeperd.devnet.curie import walk_mark

        last: RuntimeError | None = None
        for walk in range(MARK_WALKS):
            try:
                walk_mark(self.client, self.manifest, symbol, usd)
            except DevnetRpcError as exc:
                # (Curie refused a trade of the walk: the other protocols moved all the same,
                # and "the devnet refused it" read as if nothing had: a by-hand trial)
                raise PriceWalkError(
                    f"Curie's mark did not follow: {exc}; the other protocols (Aave's feed, "
                    "Morpho's oracles) have the new price") from exc
            except RuntimeError as exc:  # the mark did not reach it: it needs more time
                last = exc
                continue
            if walk:
                self.refresh_feeds()
            return
        raise PriceWalkError(
            f"{last} after {MARK_WALKS} walks; the other protocols have the new price. "
            "Restart the devnet (`keeperd devnet down`, `keeperd devnet up`) for a fresh "
            "Curie market") from last

    def set_price_async(self, symbol: str, usd: float) -> list[str]:
        """The same, sent without waiting for it to be mined (automine off)."""
        return [str(self.client.call("eth_sendTransaction", {
            "from": self.manifest["aave_v3"]["admin"], "to": to, "data": "0x" + data.hex(),
            "gas": hex(gas or MOVE_GAS)})) for to, data, gas in self._price_moves(symbol, usd)]

    def _price_moves(self, symbol: str, usd: float) -> list[tuple[str, bytes, int | None]]:
        """(to, calldata, gas or None to estimate) of each transaction of a move, in the
        order they must be mined: the feed's new round, the Morpho oracles of the asset,
        then the Uniswap pools brought to the oracle's new prices (`_pools_follow`)."""
        moves = [(self._feed(symbol),
                  self._aggregator.encode_call("setAnswer", round(usd * 10**PRICE_DECIMALS)),
                  None)]
        blue = self.manifest.get("morpho_blue")
        if blue:
            from keeperd.devnet.morpho import compiled, oracle_price

            oracle_art = compiled()["OracleMock"]
            decimals = {s: r["decimals"] for s, r in self.manifest["aave_v3"]["reserves"].items()}
            for market in blue["markets"].values():
                if symbol not in (market["collateral"], market["loan"]):
                    continue
                prices = {s: usd if s == symbol else self.price(s)
                          for s in (market["collateral"], market["loan"])}
                answer = oracle_price(prices[market["collateral"]], prices[market["loan"]],
                                      decimals[market["collateral"]], decimals[market["loan"]])
                moves.append((market["oracle"], oracle_art.encode_call("setPrice", answer),
                              None))
        return moves + self._pools_follow()

    def align_pools(self) -> None:
        """The arbitrageur's next move: every Uniswap pool of the devnet's pairs back at the
        oracle's prices (a keeper's sales leave a pool below them; on a chain arbitrage
        closes the gap within a block or two, on the devnet nothing does until this or the
        next price move). With automine off it waits in the pool for the next block."""
        admin = self.manifest["aave_v3"]["admin"]
        for to, data, gas in self._pools_follow():
            if self.client.call("anvil_getAutomine"):
                self.client.send(admin, to, data, gas=gas)
            else:
                self.client.call("eth_sendTransaction", {
                    "from": admin, "to": to, "data": "0x" + data.hex(),
                    "gas": hex(gas or MOVE_GAS)})

    def _pools_follow(self) -> list[tuple[str, bytes, int | None]]:
        """The arbitrage a real chain does within the block: every Uniswap pool of the
        devnet's pairs swapped to the price the Aave oracle gives its two tokens once the
        feed has moved (DevnetLiquidity.align reads them in its own transaction, after the
        feed's: wstETH's and the other adapters' prices follow as the oracle's do). A
        devnet whose pools kept their old price sold every crash's seized collateral above
        the crashed price, and several of a keeper's sales through one pool in one block
        never met their bound, as they do on a chain."""
        dex = self.manifest.get("uniswap_v3") or {}
        helper, pools = dex.get("liquidity_helper"), sorted((dex.get("pools") or {}).values())
        if not helper or not pools:
            return []
        data = encode_call("align(address[],address)", ["address[]", "address"],
                           [pools, self.manifest["aave_v3"]["oracle"]])
        return [(helper, data, ALIGN_GAS_BASE + ALIGN_GAS_PER_POOL * len(pools))]

    def refresh_feeds(self) -> None:
        """Publish a new round at the current price on every feed. A cached state may be
        hours old while anvil's clock is the wall clock: without this, every feed would look
        stale (and keeperd's breaker would rightly pause everything)."""
        for symbol in self.manifest["price_feeds"]:
            self.set_price(symbol, self.price(symbol))
        admin = self.manifest["aave_v3"]["admin"]
        curie = self.manifest.get("perp_curie")
        if curie:
            # Curie's index caches a TWAP of the feed; hours without an update (a cached state
            # loaded later) would make its views revert. One update a market mends it.
            from keeperd.devnet.curie import refresh_index

            for symbol in curie["index_feeds"]:
                refresh_index(self.client, self.manifest, symbol)
        for feed in self.manifest.get("extra_feeds", {}).values():
            answer = int.from_bytes(self.client.eth_call(
                feed, self._aggregator.encode_call("latestAnswer")), "big", signed=True)
            self.client.send(admin, feed, self._aggregator.encode_call("setAnswer", answer))

    def keep_feeds_fresh(self, max_age_s: int = FRESH_FEED_S) -> bool:
        """What a real chain's feeds do on their heartbeat: when chain time has moved on (a
        mark walk's quarter hours, `mine` of thousands of blocks) and any feed's round is
        older than `max_age_s`, publish a new round at today's price on every feed. Called
        after each devnet command, so a devnet never shows feeds staler than a real chain's
        (a stale one trips keeperd's breaker, rightly). True if it refreshed. Not with
        automine off: blocks are the operator's then, and the new rounds would wait in the
        pool behind a price just moved, to undo it in the next block."""
        if not self.client.call("anvil_getAutomine"):
            return False
        head = int(self.client.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
        for symbol in self.manifest["price_feeds"]:
            updated_at = int.from_bytes(self.client.eth_call(
                self._feed(symbol), self._aggregator.encode_call("latestTimestamp")), "big")
            if head - updated_at > max_age_s:
                self.refresh_feeds()
                return True
        return False

    def set_price_at(self, symbol: str, usd: float, updated_at: int) -> None:
        """Publish a round with an explicit `updatedAt` (to make a feed look stale)."""
        answer = round(usd * 10**PRICE_DECIMALS)
        self.client.send(self.manifest["aave_v3"]["admin"], self._feed(symbol),
                         self._aggregator.encode_call("setAnswerAt", answer, updated_at))

    def price(self, symbol: str) -> float:
        data = self.client.eth_call(self._feed(symbol),
                                    self._aggregator.encode_call("latestAnswer"))
        return int.from_bytes(data, "big", signed=True) / 10**PRICE_DECIMALS

    def oracle_price(self, token: str) -> float:
        """What the AaveOracle says `token` is worth, in USD: its source's answer (an adapter's
        for wstETH, which follows ETH/USD; a seeded constant was used: the wrong worth after a
        move)."""
        oracle = contracts.aave("AaveOracle")
        answer = oracle.decode_result("getAssetPrice", self.client.eth_call(
            self.manifest["aave_v3"]["oracle"], oracle.encode_call("getAssetPrice", token)))
        return int(answer[0]) / 10**PRICE_DECIMALS

    def open_position(self, user: str, collateral: str, collateral_amount: float, debt: str,
                      debt_amount: float, *, emode: int = 0) -> None:
        """Make `user` supply `collateral_amount` of one asset and borrow `debt_amount` of
        another (amounts in whole tokens). Anvil impersonates the user."""
        reserves = self.manifest["aave_v3"]["reserves"]
        pool = self.manifest["aave_v3"]["pool"]
        token_art, pool_art = contracts.aave("MintableERC20"), contracts.aave("Pool")
        c_token, d_token = self.manifest["tokens"][collateral], self.manifest["tokens"][debt]
        c_units = int(collateral_amount * 10 ** reserves[collateral]["decimals"])
        d_units = int(debt_amount * 10 ** reserves[debt]["decimals"])
        self.client.call("anvil_setBalance", user, hex(10**19))
        self.client.send(user, c_token, token_art.encode_call("mint", user, c_units))
        allowance = int.from_bytes(self.client.eth_call(
            c_token, token_art.encode_call("allowance", user, pool)), "big")
        if allowance < c_units:  # USDT-like tokens approve only from zero
            if allowance:
                self.client.send(user, c_token, token_art.encode_call("approve", pool, 0))
            self.client.send(user, c_token, token_art.encode_call("approve", pool, 2**256 - 1))
        self.client.send(user, pool, pool_art.encode_call("supply", c_token, c_units, user, 0))
        if emode:
            self.client.send(user, pool, pool_art.encode_call("setUserEMode", emode))
        self.client.send(user, pool, pool_art.encode_call("borrow", d_token, d_units, 2, 0, user))

    def fund(self, who: str, usd: float, gas_eth: int = 100) -> dict[str, float]:
        """Mint `usd` worth of every devnet token to `who` (at its feed's price; the tokens
        mint to anyone who asks) and top its ETH up to `gas_eth`: what a keeper needs to
        liquidate with its own balance. Returns the whole tokens minted, by symbol."""
        token_art = contracts.aave("MintableERC20")
        reserves = self.manifest["aave_v3"]["reserves"]
        admin = self.manifest["aave_v3"]["admin"]
        minted: dict[str, float] = {}
        for symbol, token in sorted(self.manifest["tokens"].items()):
            price = self.oracle_price(token)
            decimals = reserves[symbol]["decimals"]
            units = int(usd / price * 10**decimals)
            self.client.send(admin, token, token_art.encode_call("mint", who, units))
            minted[symbol] = units / 10**decimals
        if int(self.client.call("eth_getBalance", who, "latest"), 16) < gas_eth * 10**18:
            self.client.call("anvil_setBalance", who, hex(gas_eth * 10**18))
        return minted

    def account_data(self, user: str) -> tuple[int, ...]:
        """Pool.getUserAccountData(user) as Aave returns it (six integers)."""
        pool_art = contracts.aave("Pool")
        return pool_art.decode_result("getUserAccountData", self.client.eth_call(
            self.manifest["aave_v3"]["pool"], pool_art.encode_call("getUserAccountData", user)))

    def mine(self, blocks: int = 1, *, block_time: int = 0) -> int:
        """Mine `blocks`, in runs of at most MINE_RUN: anvil answers a run only once it is
        all mined, and a daemon reading every block beside it slows each one (4,000 at once
        outlasted the client's timeout, seen by hand). `block_time`: each block that many
        seconds after the last (0: anvil's own clock, a second at most between them — 1,200
        blocks were 67 seconds, and a crash's Curie collateral liquidations waited for good
        on a TWAP that time did not move, by hand)."""
        left = blocks
        # (with time moving, the feeds' heartbeats between runs: 1,200 blocks are four hours,
        # and a daemon watching saw every feed go stale until the command's end — a review)
        most = min(MINE_RUN, max(1, FRESH_FEED_S // block_time)) if block_time else MINE_RUN
        while left > 0:
            run = min(left, most)
            self.client.mine(run, interval=block_time)
            left -= run
            if left and block_time:
                self.keep_feeds_fresh()
        return self.client.block_number()

    def advance_time(self, seconds: int, mine: bool = True) -> None:
        self.client.increase_time(seconds)
        if mine:
            self.client.mine(1)

    def snapshot(self) -> str:
        return str(self.client.call("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.client.call("evm_revert", snapshot_id):
            raise RuntimeError(f"evm_revert({snapshot_id}) failed")

    def close(self) -> None:
        self.client.close()


class Devnet(DevnetControl):
    """Starts anvil from the cached state for (accounts, seed) and stops it on exit."""

    def __init__(self, accounts: int = DEFAULT_ACCOUNTS, seed: int = DEFAULT_SEED, *,
                 port: int | None = None, detached: bool = False,
                 log_path: Path | None = None, aave_version: str = DEFAULT_AAVE) -> None:
        self.accounts = accounts
        self.seed = seed
        self.aave_version = aave_version
        self.anvil = Anvil(port, detached=detached, log_path=log_path)

    def start(self) -> Devnet:
        built = ensure_state(self.accounts, self.seed, aave_version=self.aave_version)
        self.anvil.load_state = built.state_path
        self.anvil.start()
        manifest = dict(built.manifest)
        manifest["rpc_url"] = self.anvil.rpc_url
        manifest["ws_url"] = self.anvil.ws_url
        super().__init__(manifest)
        self._clock_not_behind_state()
        self.refresh_feeds()
        return self

    def _clock_not_behind_state(self) -> None:
        """A loaded anvil stamps new blocks with the wall clock, but a state built with time
        warps (Curie needs 30 minutes of pool history) ends in the future: the next block would
        go back in time, and Curie's funding arithmetic underflows. Move the clock past it."""
        import time

        head = self.client.call("eth_getBlockByNumber", "latest", False)
        ahead = int(head["timestamp"], 16) - int(time.time())
        if ahead >= 0:
            self.client.increase_time(ahead + 1)

    def stop(self) -> None:
        if hasattr(self, "client"):
            self.close()
        self.anvil.stop()

    def write_manifest(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1))
        tmp.replace(path)
        return path

    def __enter__(self) -> Devnet:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
