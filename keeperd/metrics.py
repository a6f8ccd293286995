"""Every Prometheus metric keeperd exports, defined once, with help text and bounded labels.

Labels are limited to small closed sets (chain name, endpoint name, RPC method, outcome).
Nothing per-account and nothing secret ever becomes a label: endpoint URLs may carry API keys,
so endpoints are labelled by their configured name or position, never by URL.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# RPC methods keeperd calls on purpose; anything else is reported as "other" so a caller
# cannot blow up the label set.
KNOWN_RPC_METHODS = frozenset(
    {
        "eth_blockNumber",
        "eth_chainId",
        "eth_call",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getLogs",
        "eth_getCode",
        "eth_getBalance",
        "eth_getTransactionCount",
        "eth_getTransactionReceipt",
        "eth_sendRawTransaction",
        "eth_sendTransaction",
        "eth_estimateGas",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_subscribe",
        "batch",
    }
)


def method_label(method: str) -> str:
    return method if method in KNOWN_RPC_METHODS else "other"


class Metrics:
    """The registry and the metrics on it. One instance per process (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self.build_info = Gauge(
            "keeperd_build_info", "keeperd version (value is always 1).", ["version"], registry=r
        )

        # --- the HTTP surface (/metrics, /healthz, /readyz) -------------------------------
        self.http_refused = Counter(
            "keeperd_http_connections_refused_total",
            "Connections to the metrics port answered 503 and closed because "
            "metrics.max_connections were already open.", registry=r)
        self.http_unauthorized = Counter(
            "keeperd_http_unauthorized_total",
            "/metrics requests refused (401) for a missing or wrong bearer token (a scraper "
            "with a stale token, or someone probing).", registry=r)

        # --- RPC pool -------------------------------------------------------------------
        self.rpc_requests = Counter(
            "keeperd_rpc_requests_total",
            "JSON-RPC requests sent, by endpoint, method and outcome "
            "(ok, rpc_error, transport_error, timeout, rate_limited, bad_response).",
            ["chain", "endpoint", "method", "outcome"],
            registry=r,
        )
        self.rpc_latency = Histogram(
            "keeperd_rpc_request_duration_seconds",
            "Wall time of one JSON-RPC request (or batch) to one endpoint.",
            ["chain", "endpoint", "method"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.rpc_retries = Counter(
            "keeperd_rpc_retries_total",
            "Requests retried after a transient error (on the same or another endpoint).",
            ["chain", "method"],
            registry=r,
        )
        self.rpc_failovers = Counter(
            "keeperd_rpc_failovers_total",
            "Times a request moved from a failing endpoint to another one.",
            ["chain", "from_endpoint", "to_endpoint"],
            registry=r,
        )
        self.rpc_endpoint_up = Gauge(
            "keeperd_rpc_endpoint_up",
            "1 while the endpoint is considered healthy, 0 while it is benched.",
            ["chain", "endpoint"],
            registry=r,
        )
        self.rpc_endpoint_latency_ewma = Gauge(
            "keeperd_rpc_endpoint_latency_ewma_seconds",
            "Exponentially weighted moving average of the endpoint's request latency.",
            ["chain", "endpoint"],
            registry=r,
        )
        self.rpc_endpoint_head_lag = Gauge(
            "keeperd_rpc_endpoint_head_lag_blocks",
            "How many blocks the endpoint's head trails the best head seen on the chain.",
            ["chain", "endpoint"],
            registry=r,
        )
        self.rpc_all_down = Gauge(
            "keeperd_rpc_all_endpoints_down",
            "1 while no endpoint of the chain answers.",
            ["chain"],
            registry=r,
        )

        # --- blocks ---------------------------------------------------------------------
        self.head_block = Gauge(
            "keeperd_head_block_number", "Latest block keeperd has processed.", ["chain"],
            registry=r,
        )
        self.head_timestamp = Gauge(
            "keeperd_head_block_timestamp_seconds",
            "Timestamp of the latest processed block (unix seconds).",
            ["chain"],
            registry=r,
        )
        self.blocks_seen = Counter(
            "keeperd_blocks_total", "New blocks processed.", ["chain"], registry=r
        )
        self.reorgs = Counter(
            "keeperd_reorgs_total", "Chain reorganisations detected.", ["chain"], registry=r
        )
        self.reorg_depth = Histogram(
            "keeperd_reorg_depth_blocks",
            "Depth of detected reorganisations.",
            ["chain"],
            buckets=(1, 2, 3, 5, 8, 13, 21, 64),
            registry=r,
        )
        self.block_source_errors = Counter(
            "keeperd_block_source_errors_total",
            "Errors while following the chain head (the source keeps going).",
            ["chain", "source"],
            registry=r,
        )

        # --- positions and health ---------------------------------------------------------
        self.accounts_tracked = Gauge(
            "keeperd_accounts_tracked", "Accounts in the protocol's index.",
            ["chain", "protocol"], registry=r)
        self.index_lag = Gauge(
            "keeperd_index_lag_blocks",
            "Blocks between the chain head and the last block the account index covers.",
            ["chain", "protocol"], registry=r)
        self.index_waits = Counter(
            "keeperd_index_waits_total",
            "Index catch-ups that stopped short because no endpoint had the range's last block "
            "yet (a node behind the head answers logs silently incomplete: never trusted).",
            ["chain", "protocol"], registry=r)
        self.sqlite_checkpoints = Counter(
            "keeperd_sqlite_checkpoints_total",
            "Checkpoints of the SQLite state file's write-ahead log, run off the event loop "
            "(storage/wal_checkpoint.py), by outcome (ok, failed).",
            ["outcome"], registry=r)
        self.accounts_by_health = Gauge(
            "keeperd_accounts_by_health",
            "Accounts with debt by health-factor bucket (bucket = upper bound, or 'inf').",
            ["chain", "protocol", "bucket"], registry=r)
        self.debt_at_risk = Gauge(
            "keeperd_debt_at_risk_usd",
            "Debt (USD) of accounts whose health factor is below the `below` level (a perp "
            "account: its open notional, or, liquidatable through its margin alone, what a "
            "margin liquidation repays).",
            ["chain", "protocol", "below"], registry=r)
        self.collateral_at_risk = Gauge(
            "keeperd_collateral_at_risk_usd",
            "Collateral (USD) of accounts whose health factor is below the `below` level.",
            ["chain", "protocol", "below"], registry=r)
        self.total_debt = Gauge(
            "keeperd_debt_usd", "Total debt (USD) of tracked accounts (a perp protocol's: "
            "their open notional).",
            ["chain", "protocol"], registry=r)
        self.total_collateral = Gauge(
            "keeperd_collateral_usd", "Total collateral (USD) of tracked accounts.",
            ["chain", "protocol"], registry=r)
        self.scan_duration = Histogram(
            "keeperd_scan_duration_seconds",
            "Time to read and evaluate positions (kind: full, incremental, reprice).",
            ["chain", "protocol", "kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r)
        self.scans = Counter(
            "keeperd_scans_total", "Position scans finished, by kind and outcome.",
            ["chain", "protocol", "kind", "outcome"], registry=r)
        self.market_read_failures = Counter(
            "keeperd_market_read_failures_total", "Blocks in which a market could not be read "
            "(its oracle or rate model reverted): its positions are left out of that block's "
            "evaluation and liquidation; the other markets go on.",
            ["chain", "protocol", "market", "part"], registry=r)
        self.health_mismatches = Counter(
            "keeperd_health_mismatch_total",
            "Accounts whose locally computed health factor differed from the protocol's own "
            "answer at the same block (should stay 0).",
            ["chain", "protocol"], registry=r)
        self.listener_errors = Counter(
            "keeperd_listener_errors_total", "Listeners of a scan (oracle monitor, executor, "
            "alerts, cascade monitor) that raised; the others still ran.",
            ["chain", "protocol", "listener"], registry=r)
        self.scan_skipped = Counter(
            "keeperd_scan_skipped_total",
            "Scan requests folded into a running scan instead of queueing behind it.",
            ["chain", "protocol"], registry=r)

        # --- oracles and the circuit breaker ---------------------------------------------
        # (by source: two protocols' feeds of one asset — Aave's source and Curie's index,
        # or a source just replaced beside one that was not — overwrote each other, and the
        # gauge showed the price Aave did not liquidate at: a by-hand trial)
        self.oracle_price = Gauge(
            "keeperd_oracle_price_usd", "Latest answer of a feed a protocol reads, by the "
            "source read (the feed, proxy or adapter's address).",
            ["chain", "asset", "source"], registry=r)
        self.oracle_age = Gauge(
            "keeperd_oracle_age_seconds", "Seconds since a feed's latest update (block time), "
            "by the source read.", ["chain", "asset", "source"], registry=r)
        self.capital_shortfall = Gauge(
            "keeperd_capital_shortfall_tokens", "What the keeper's balance of a debt asset "
            "fell short of, to pay for the liquidations of the last block that found any "
            "(whole tokens; 0: none). Under capital: auto those went through the capital-free "
            "contract instead: keeperd_capital_forgone_usd_total says what was forgone.",
            ["chain", "protocol", "asset"], registry=r)
        self.capital_forgone = Counter(
            "keeperd_capital_forgone_usd_total", "Gross profit of liquidations not sent "
            "because the keeper did not hold the debt asset.", ["chain", "protocol"],
            registry=r)
        self.liquidations_held = Gauge(
            "keeperd_liquidations_held", "1 while liquidations on the market are held (unknown "
            "or changed protocol revision, health differing from the protocol's own).",
            ["chain", "protocol"], registry=r)
        self.protocol_revision = Gauge(
            "keeperd_protocol_revision", "The protocol's implementation revision as it reports "
            "it (Aave: POOL_REVISION()).", ["chain", "protocol"], registry=r)
        self.liquidations_unverified_rules = Gauge(
            "keeperd_liquidations_under_verification", "1 while keeperd does not know the "
            "market's rules for sure (Aave: a revision or pool implementation it does not "
            "recognise) and sends a liquidation only when the chain confirms it in a "
            "simulation.", ["chain", "protocol"], registry=r)
        self.foreign_transactions = Counter(
            "keeperd_keeper_foreign_transactions_total", "Transactions mined from the keeper's "
            "address that keeperd did not sign: the key is in use elsewhere (should stay 0).",
            ["chain"], registry=r)
        self.keeper_runs_code = Gauge(
            "keeperd_keeper_address_runs_code", "1 while the keeper's address runs code: "
            "delegated (EIP-7702) to a contract, or the node says it is one (1 is expected "
            "with KeeperWave delegated or keeper.allowed_delegates naming the delegate; 0 "
            "otherwise).", ["chain"], registry=r)
        self.liquidations_verified = Counter(
            "keeperd_liquidations_verified_total", "Liquidations simulated under verification, "
            "by outcome: sent (the chain confirmed health < 1 and a profitable outcome), "
            "dry_run (confirmed so, and recorded: dry-run mode sends nothing), refused (it "
            "did not).", ["chain", "protocol", "outcome"], registry=r)
        self.breaker_state = Gauge(
            "keeperd_breaker_tripped", "1 while liquidations depending on the asset are paused.",
            ["chain", "asset"], registry=r)
        self.reference_requests = Counter(
            "keeperd_reference_requests_total", "Reference price fetches by source and outcome "
            "(ok, error, timeout).", ["source", "outcome"], registry=r)
        self.reference_median_missing = Gauge(
            "keeperd_reference_median_missing", "1 while fewer than oracles.min_sources "
            "reference sources answer for an asset: its deviation check is off meanwhile.",
            ["chain", "asset"], registry=r)
        self.reference_latency = Histogram(
            "keeperd_reference_request_duration_seconds", "Reference price fetch time.",
            ["source"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.reference_price = Gauge(
            "keeperd_reference_price_usd", "Last price a reference source gave.",
            ["source", "asset"], registry=r)
        self.oracle_deviation = Gauge(
            "keeperd_oracle_deviation_ratio",
            "|oracle - reference median| / reference median, per asset (NaN: not measured, "
            "a market rate whose assets have no trusted reference price).",
            ["chain", "asset"], registry=r)
        self.pyth_conf_ratio = Gauge(
            "keeperd_pyth_confidence_ratio", "Pyth confidence width over price (sigma/mu).",
            ["chain", "asset"], registry=r)
        self.pyth_age = Gauge(
            "keeperd_pyth_age_seconds", "Seconds since the Pyth price's publish time.",
            ["chain", "asset"], registry=r)
        self.oracle_second_reads = Counter(
            "keeperd_oracle_second_reads_total",
            "The price watch's readings of a block's feeds on a second endpoint, by outcome: "
            "read (each feed compared with the first's), unavailable (not in time, or failed: "
            "the first alone).",
            ["chain", "outcome"], registry=r)
        self.oracle_anomalies = Counter(
            "keeperd_oracle_anomalies_total",
            "Feed oddities that do not pause liquidations alone (jump, source_changed).",
            ["chain", "asset", "kind"], registry=r)
        self.breaker_transitions = Counter(
            "keeperd_breaker_transitions_total", "Breaker trips and resets, by asset.",
            ["chain", "asset", "to"], registry=r)

        # --- liquidation execution --------------------------------------------------------
        self.liquidation_funnel = Counter(
            "keeperd_liquidations_total",
            "Liquidation opportunities by stage: detected, profitable, unprofitable, "
            "simulated_ok, simulation_failed, dry_run, sent, included, reverted, lost_race, "
            "cancelled, dropped, breaker_paused (a price it rests on untrusted), no_capital, "
            "no_swap_pool, verification_refused (the chain did not confirm it), "
            "second_opinion_refused (a second endpoint saw it revert), "
            "second_opinion_unavailable, skipped_journaled, skipped_in_flight (a transaction "
            "for the "
            "same account, tracked again after a restart or a reorg, in flight under its "
            "earlier position), fee_unread (an OP Stack chain's L1 data fee unknown: not "
            "sent), fee_second_opinion_unavailable (that fee read from one endpoint of two), "
            "resumed (sent before a restart, tracked again at start: with sent, what the "
            "settled stages add up to), held (not considered this block: a market's gate, "
            "the key's hold, a sending pause, the liquidator's own hold; counted again at "
            "every block it lasts, as detected is). Each opportunity is counted at a stage "
            "once a block, though the block's price-exposed pass and its full pass both "
            "consider it.",
            ["chain", "protocol", "stage"], registry=r)
        self.liquidation_profit = Counter(
            "keeperd_liquidation_profit_usd_total",
            "Realised profit of included liquidations that gained (seized value - repaid value "
            "- gas; Perp Curie: the liquidator's share of the penalty - gas); the P&L is this "
            "less keeperd_liquidation_loss_usd_total, as the journal holds it entry by entry.",
            ["chain", "protocol"], registry=r)
        self.liquidation_loss = Counter(
            "keeperd_liquidation_loss_usd_total",
            "Realised loss of included liquidations that lost (gas above what they gained), "
            "and the gas of those that gained nothing: reverted (a race lost included) or "
            "cancelled.",
            ["chain", "protocol"], registry=r)
        self.liquidation_fee_beside_gas = Gauge(
            "keeperd_liquidation_fee_beside_gas_usd", "On an OP Stack chain: the most a "
            "liquidation of the last simulated wave was priced to pay beside its gas (the L1 "
            "data and operator fees the chain's GasPriceOracle gave, with keeperd's headroom), "
            "in USD.", ["chain", "protocol"], registry=r)
        self.liquidation_gas_cost = Counter(
            "keeperd_liquidation_gas_cost_usd_total",
            "Gas paid for liquidation transactions (included or reverted), in USD; on an OP "
            "Stack chain with the L1 data fee (and operator fee) its receipts say it paid.",
            ["chain", "protocol"], registry=r)
        self.block_to_broadcast = Histogram(
            "keeperd_block_to_broadcast_seconds",
            "Time from a block's arrival at keeperd to the broadcast of a liquidation it "
            "revealed.",
            ["chain", "protocol"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r)
        self.keeper_balance = Gauge(
            "keeperd_keeper_balance",
            "The keeper account's balances in whole tokens (asset 'native' for gas).",
            ["chain", "asset"], registry=r)
        # --- cascade risk (labels: asset is the scenario's shocked asset, or "joint") ---
        shock_labels = ["chain", "protocol", "asset", "shock", "model"]
        self.cascade_liquidated_debt = Gauge(
            "keeperd_cascade_liquidated_debt_usd", "Debt liquidators repay if the asset's price "
            "falls by `shock` (model static: the shock alone; cascade: with the price impact "
            "of selling the seized collateral, round after round).", shock_labels, registry=r)
        self.cascade_accounts = Gauge(
            "keeperd_cascade_liquidated_accounts", "Positions liquidated in the scenario.",
            shock_labels, registry=r)
        self.cascade_seized = Gauge(
            "keeperd_cascade_collateral_seized_usd", "Collateral seized (and sold) in the "
            "scenario, at the prices it was seized at.", shock_labels, registry=r)
        self.cascade_bonus = Gauge(
            "keeperd_cascade_liquidation_bonus_usd", "Liquidation bonus paid to liquidators "
            "in the scenario.", shock_labels, registry=r)
        self.cascade_bad_debt = Gauge(
            "keeperd_cascade_bad_debt_usd", "Debt no longer covered by collateral after the "
            "scenario (static: at the shocked prices; cascade: at the final prices).",
            shock_labels, registry=r)
        self.cascade_fund_coverage = Gauge(
            "keeperd_cascade_fund_coverage_ratio", "Insurance fund / bad debt in the scenario "
            "(+Inf: no bad debt).", shock_labels, registry=r)
        # The baseline: no shock, today's prices. The scenario figures above include it (a
        # position underwater now is liquidated at every shock); the dashboard subtracts it
        # to show what a shock adds.
        baseline_labels = ["chain", "protocol", "model"]
        self.cascade_baseline_liquidated_debt = Gauge(
            "keeperd_cascade_baseline_liquidated_debt_usd", "Debt liquidators repay at today's "
            "prices, no shock (static: positions liquidatable now; cascade: with the price "
            "impact of selling their collateral).", baseline_labels, registry=r)
        self.cascade_baseline_accounts = Gauge(
            "keeperd_cascade_baseline_liquidated_accounts", "Positions liquidated at today's "
            "prices, no shock.", baseline_labels, registry=r)
        self.cascade_baseline_bad_debt = Gauge(
            "keeperd_cascade_baseline_bad_debt_usd", "Debt not covered by collateral at "
            "today's prices, no shock (cascade: after selling the seized collateral).",
            baseline_labels, registry=r)
        cascade_labels = ["chain", "protocol", "asset", "shock"]
        self.cascade_amplification = Gauge(
            "keeperd_cascade_amplification_ratio", "Final price drop / initial shock (1: the "
            "liquidations did not move the price).", cascade_labels, registry=r)
        self.cascade_final_drop = Gauge(
            "keeperd_cascade_final_drop_ratio", "The price drop after the cascade, as a "
            "fraction.", cascade_labels, registry=r)
        self.cascade_rounds = Gauge(
            "keeperd_cascade_rounds", "Rounds of the cascade in which positions were "
            "liquidated.", cascade_labels, registry=r)
        self.cascade_depth_coverage = Gauge(
            "keeperd_cascade_depth_coverage_ratio", "Collateral the market absorbs within the "
            "liquidation bonus's slippage / collateral the scenario sells (lowest over the "
            "assets sold; below 1: liquidators lose money selling, liquidations stall).",
            cascade_labels, registry=r)
        self.cascade_toxic_debt = Gauge(
            "keeperd_cascade_toxic_debt_usd", "Debt of positions whose liquidation makes them "
            "worse (LTV above 1/(1+bonus)) after the scenario; slippage=with marks collateral "
            "down by the price impact.", ["chain", "protocol", "asset", "shock", "slippage"],
            registry=r)
        self.cascade_critical_shock = Gauge(
            "keeperd_cascade_critical_shock_ratio", "The smallest drop of the asset (or of all "
            "volatile assets: joint) whose cascade liquidates at least "
            "risk.cascade.min_liquidation_usd (NaN: none up to the largest shock).",
            ["chain", "protocol", "asset"], registry=r)
        self.bad_debt_outstanding = Gauge(
            "keeperd_bad_debt_outstanding_usd", "Bad debt the protocol already carries, "
            "realised and not yet covered: Aave v3.3+ its reserves' deficit "
            "(getReserveDeficit, at the block's oracle prices), Perp Curie its accounts with "
            "no position left and a negative value. Not exported for Morpho Blue, whose "
            "lenders take a bad debt at the liquidation that leaves it.",
            ["chain", "protocol"], registry=r)
        self.bad_debt_realised = Counter(
            "keeperd_bad_debt_realised_usd_total", "Bad debt the protocol realised while keeperd "
            "watched: each increase of a part of keeperd_bad_debt_outstanding_usd (an Aave "
            "reserve's deficit in its tokens, a Curie account's) priced when it happened; a "
            "price move of a deficit already there is none.", ["chain", "protocol"],
            registry=r)
        self.cascade_fund = Gauge(
            "keeperd_cascade_insurance_fund_usd", "The insurance / default fund bad debt is "
            "measured against.", ["chain", "protocol"], registry=r)
        self.cascade_block = Gauge(
            "keeperd_cascade_evaluated_block", "Block of the snapshot the cascade figures "
            "describe.", ["chain", "protocol"], registry=r)
        self.cascade_duration = Histogram(
            "keeperd_cascade_duration_seconds", "Time to compute every scenario.",
            ["chain", "protocol"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                            5, 10), registry=r)
        # --- perpetual venues (watched accounts only: a venue's whole book is not public) ---
        self.perp_accounts_below = Gauge(
            "keeperd_perp_accounts_below", "Perp accounts whose health (equity / maintenance "
            "margin) is below each level: a venue's watched accounts, every trader of an "
            "on-chain perp protocol (Perp Curie).", ["venue", "below"], registry=r)
        self.perp_notional = Gauge(
            "keeperd_perp_notional_usd", "Open notional of the watched accounts, by coin.",
            ["venue", "coin"], registry=r)
        self.perp_liquidated_notional = Gauge(
            "keeperd_perp_liquidated_notional_usd", "Open interest of the watched accounts "
            "liquidated if the coin moves by `move` (a fraction; negative: down), the other "
            "marks unchanged (cross margin takes the whole account), valued at the moved "
            "marks: a larger fall can show less notional than a smaller one (the same "
            "positions, priced lower).",
            ["venue", "coin", "move"], registry=r)
        self.perp_bad_debt = Gauge(
            "keeperd_perp_bad_debt_usd", "Negative account value (bad debt, which the "
            "insurance fund pays) of the accounts an index move of `coin` would leave under "
            "water, the other marks unchanged.", ["venue", "coin", "move"], registry=r)
        self.perp_funding_to_maintenance = Gauge(
            "keeperd_perp_funding_to_maintenance_accounts", "Accounts that funding alone, at "
            "the current premium, brings to their maintenance margin within `within_hours`.",
            ["venue", "within_hours"], registry=r)
        self.perp_maintenance_mismatches = Counter(
            "keeperd_perp_maintenance_mismatch_total", "Watched accounts whose cross "
            "maintenance margin by keeperd's tier arithmetic differed from the venue's own "
            "figure (crossMaintenanceMarginUsed) by more than a cent and 0.01 %.",
            ["venue"], registry=r)
        self.perp_polls = Counter(
            "keeperd_perp_polls_total", "Reads of a venue's watched accounts, by outcome "
            "(ok; partial: some accounts unread, keeperd_perp_accounts_unread; error: none).",
            ["venue", "outcome"], registry=r)
        self.perp_accounts_unread = Gauge(
            "keeperd_perp_accounts_unread", "Watched accounts the venue's last answer did not "
            "let keeperd read (a number of theirs, or of a market they hold — a NaN or "
            "negative mark, margin fraction, leverage — or a malformed state): not evaluated, "
            "their alerts kept as they were; not counted in keeperd_perp_accounts_below.",
            ["venue"], registry=r)
        self.perp_market_status = Gauge(
            "keeperd_perp_market_status", "1 for the status a perp market is in (open, "
            "paused, closed; Perp Curie's BaseToken): liquidations in a market that is not "
            "open are held (counted `held` in keeperd_liquidations_total when a liquidatable "
            "account has no open market left), the venue's other markets go on.",
            ["venue", "market", "status"], registry=r)
        # --- replicas (storage.url: PostgreSQL, a lease per keeper identity) ---
        self.replica_role = Gauge(
            "keeperd_replica_role", "1 for this replica's role (leader: it signs and sends; "
            "standby: it follows and evaluates).", ["identity", "role"], registry=r)
        self.lease_epoch = Gauge(
            "keeperd_lease_epoch", "The lease epoch this replica holds (0: none).",
            ["identity"], registry=r)
        self.replica_config_differs = Gauge(
            "keeperd_replica_config_differs", "1 while this standby's config differs from "
            "the leader's in what replicas share (it would lead with its own at a failover).",
            ["identity"], registry=r)
        self.replica_took_over_other_config = Gauge(
            "keeperd_replica_took_over_other_config", "1 while this replica leads with a "
            "config that differs from the last leader's in what replicas share (it took the "
            "lease over with its own), until its config is reloaded or it restarts.",
            ["identity"], registry=r)
        self.clock_skew = Gauge(
            "keeperd_clock_skew_seconds", "This process's wall clock less the shared "
            "database's (replicas): webhook signatures, the outbox's retry windows and its "
            "ages run on the wall clock.", registry=r)
        self.lease_renewals = Counter(
            "keeperd_lease_renewals_total", "Lease renewals and takeover attempts, by outcome "
            "(ok, lost, error).", ["identity", "outcome"], registry=r)
        self.lease_losses = Counter(
            "keeperd_lease_losses_total", "Times this replica stopped leading (lost or "
            "unrenewable lease, a fenced write refused).", ["identity"], registry=r)
        self.lease_since_renewal = Gauge(
            "keeperd_lease_seconds_since_renewal", "Seconds since this replica last renewed "
            "or took the lease.", ["identity"], registry=r)
        # --- alerting ---
        self.alerts = Counter(
            "keeperd_alerts_total", "Alert notifications decided, by rule and kind (firing, "
            "escalated, repeat, resolved, event, retracted).", ["rule", "kind"], registry=r)
        self.alerts_suppressed = Counter(
            "keeperd_alerts_suppressed_total", "Notifications not sent, by reason (silenced, "
            "inhibited: held while the oracle is untrusted, retracted: block reorganised away "
            "before delivery).", ["rule", "reason"], registry=r)
        self.alerts_firing = Gauge(
            "keeperd_alerts_firing", "Alerts currently firing, by rule and severity.",
            ["rule", "severity"], registry=r)
        self.watched_without_position = Gauge(
            "keeperd_watched_without_position", "Accounts of a watchlist that no protocol it "
            "looks at holds a position for (no collateral, no debt, no perp margin in any of "
            "their latest evaluations): they cannot alert; often a mistyped address.",
            ["watchlist"], registry=r)
        self.watched_never_held = Gauge(
            "keeperd_watched_never_held", "Of keeperd_watched_without_position, the accounts "
            "never seen holding a position since they were listed (not liquidated, repaid or "
            "closed): most often a mistyped address. Alerted to the watchlist's route "
            "(watched_without_position).", ["watchlist"], registry=r)
        self.notifications = Counter(
            "keeperd_notifications_total", "Delivery attempts by route, sink and outcome "
            "(delivered, retry, rate_limited, dead; silenced: dropped by a silence added after it "
            "was queued).", ["route", "sink", "outcome"], registry=r)
        self.outbox_depth = Gauge(
            "keeperd_outbox_pending", "Notifications waiting in the outbox, by route and sink.",
            ["route", "sink"], registry=r)
        self.outbox_oldest = Gauge(
            "keeperd_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered "
            "notification, by route and sink.", ["route", "sink"], registry=r)
        self.outbox_dead = Gauge(
            "keeperd_outbox_dead", "Notifications given up on (dead-lettered), waiting for "
            "`keeperd alerts retry`.", registry=r)
        self.outbox_orphaned = Gauge(
            "keeperd_outbox_orphaned", "Notifications waiting for a sink the config no longer "
            "has, by route and sink id: restore the sink, or `keeperd alerts outbox reroute` "
            "or `drop` them.", ["route", "sink"], registry=r)
        self.config_restart_pending = Gauge(
            "keeperd_config_restart_pending", "1 for each top-level section of the config "
            "file that a reload (SIGHUP) read changed and only a restart applies: keeperd "
            "runs on the one it started with until then.", ["section"], registry=r)
        self.config_restart_would_fail = Gauge(
            "keeperd_config_restart_would_fail", "1 when the protocols the config file "
            "changed since the start were checked at the reload and a restart would refuse "
            "to start on them (every protocol down): see daemon.restart_would_fail.",
            registry=r)
        self.tx_sent = Counter(
            "keeperd_tx_sent_total", "Transactions broadcast, by kind (liquidation, "
            "replacement, cancel, approval).", ["chain", "kind"], registry=r)
        self.state_write_errors = Counter(
            "keeperd_state_write_errors_total",
            "Writes the state directory refused (a full disk, a read-only remount), by what "
            "was being written: keeperd goes on and retries.", ["what"], registry=r)
        # (exported at 0 from the start: a series born at 1 is no increase() to Prometheus,
        # and KeeperdStateNotWritable missed a process's first failure — a trial)
        for what in ("status", "checkpoint", "index", "outbox"):
            self.state_write_errors.labels(what)
        self.tx_in_doubt = Counter(
            "keeperd_tx_broadcast_in_doubt_total",
            "Broadcasts whose answer never came (a timeout, a reset, the private endpoint "
            "down): tracked until a receipt or the nonce is passed, and sent again.",
            ["chain"], registry=r)
        self.tx_fee_capped = Counter(
            "keeperd_tx_replacement_over_budget_total",
            "Replacements not sent because the bumped fee would exceed the opportunity's "
            "profit.", ["chain"], registry=r)
