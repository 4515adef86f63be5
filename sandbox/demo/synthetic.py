"""Deterministic synthetic enterprise data for the demo zone ``beijing-finance``.

Four tables share the privacy unit ``credit_code`` (the 18-character unified social credit code,
统一社会信用代码, with valid check characters per GB 32100-2015 and GB 11714):

``registry``          one row per enterprise: name, industry, district, founding date, registered
                      capital, status.
``tax``               one row per enterprise and filed month (2022-01 .. 2024-12): revenue, tax
                      paid, arrears.
``social_insurance``  one row per enterprise and paid month: headcount, amount, arrears.
``utilities``         one row per enterprise and billed month: electricity (kWh), water (m³).

The data are invented. Distributions are skewed the way real ones are (log-normal revenue with a
long tail, many small firms, seasonality, a 2022 dip), and the records have the gaps the
verification templates must cope with: firms founded inside the window, firms that were revoked or
deregistered, missing filings, zero-revenue ("zero declaration") months, arrears runs, and dormant
firms that use no electricity or water.

Generation is organised in fixed blocks of :data:`BLOCK_ENTERPRISES` enterprises; block ``b`` draws
from its own generator seeded by ``SeedSequence(seed, spawn_key=(b,))`` and always draws a full
block. The first ``n`` enterprises are therefore the same whatever ``n`` is and however the blocks
are grouped into chunks: ``write_parquet`` writes exactly what ``generate`` returns.

numpy's generator is used here for *data generation only*. This module has nothing to do with
differential privacy and must never be imported by the noise path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "BLOCK_ENTERPRISES",
    "DEFAULT_DEMO_ROWS",
    "DEFAULT_SEED",
    "DISTRICTS",
    "INDUSTRIES",
    "MONTHS",
    "N_MONTHS",
    "SCHEMAS",
    "STATUSES",
    "TABLES",
    "credit_code_check_char",
    "generate",
    "write_parquet",
]

DEFAULT_SEED: Final = 20261126
DEFAULT_DEMO_ROWS: Final = 360_000
"""Target number of ``tax`` rows for the demo zone (about 13,000 enterprises, 28 rows each)."""

BLOCK_ENTERPRISES: Final = 1_000
"""Enterprises per generation block (the unit of determinism)."""

DEFAULT_CHUNK_ENTERPRISES: Final = 20_000
"""Enterprises per Parquet row group in :func:`write_parquet`."""

TABLES: Final = ("registry", "tax", "social_insurance", "utilities")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

# ---------------------------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------------------------

# Beijing's 16 districts: pinyin, administrative division code (GB/T 2260), share of enterprises.
_DISTRICT_ROWS: Final = (
    ("dongcheng", "110101", 5.0),
    ("xicheng", "110102", 6.0),
    ("chaoyang", "110105", 20.0),
    ("fengtai", "110106", 8.0),
    ("shijingshan", "110107", 3.0),
    ("haidian", "110108", 18.0),
    ("mentougou", "110109", 2.0),
    ("fangshan", "110111", 4.0),
    ("tongzhou", "110112", 7.0),
    ("shunyi", "110113", 6.0),
    ("changping", "110114", 7.0),
    ("daxing", "110115", 7.0),
    ("huairou", "110116", 2.0),
    ("pinggu", "110117", 1.5),
    ("miyun", "110118", 1.5),
    ("yanqing", "110119", 1.0),
)
DISTRICTS: Final = tuple(row[0] for row in _DISTRICT_ROWS)

# Industry: share, revenue multiplier, seasonal pattern, kWh per head-month, m³ water per
# head-month, name suffix.
_INDUSTRY_ROWS: Final = (
    ("manufacturing", 6.0, 2.0, "office", 1500.0, 8.0, "制造有限公司"),
    ("wholesale_retail", 22.0, 1.5, "retail", 250.0, 2.0, "商贸有限公司"),
    ("software_it", 16.0, 1.2, "office", 300.0, 1.5, "科技有限公司"),
    ("construction", 7.0, 2.0, "construction", 200.0, 5.0, "建设工程有限公司"),
    ("real_estate", 4.0, 2.5, "office", 200.0, 3.0, "置业有限公司"),
    ("finance", 3.0, 3.0, "office", 350.0, 1.5, "投资管理有限公司"),
    ("leasing_business_services", 14.0, 0.8, "office", 200.0, 1.5, "企业管理咨询有限公司"),
    ("science_tech_services", 8.0, 1.0, "office", 400.0, 2.0, "技术服务有限公司"),
    ("accommodation_catering", 6.0, 0.7, "catering", 900.0, 25.0, "餐饮管理有限公司"),
    ("transport_logistics", 5.0, 1.2, "retail", 250.0, 2.0, "物流有限公司"),
    ("culture_media", 6.0, 0.8, "office", 250.0, 1.5, "文化传媒有限公司"),
    ("agriculture", 3.0, 0.6, "agriculture", 600.0, 40.0, "农业发展有限公司"),
)
INDUSTRIES: Final = tuple(row[0] for row in _INDUSTRY_ROWS)

STATUSES: Final = ("in_business", "abnormal", "revoked", "deregistered")
_STATUS_P: Final = (0.86, 0.05, 0.03, 0.06)
_IN_BUSINESS, _ABNORMAL, _REVOKED, _DEREGISTERED = range(4)

# Monthly revenue seasonality (Jan..Dec), normalised to mean 1 below. Spring Festival dip in
# January/February, year-end billing, "Double 11" for retail, a winter stop for construction.
_SEASON_PATTERNS: Final = {
    "office": (0.95, 0.80, 1.00, 0.98, 0.98, 1.02, 0.98, 0.96, 1.02, 0.98, 1.02, 1.31),
    "retail": (1.15, 0.95, 0.90, 0.90, 0.95, 1.05, 0.92, 0.92, 0.95, 1.05, 1.21, 1.15),
    "construction": (0.60, 0.45, 0.90, 1.05, 1.10, 1.15, 1.10, 1.10, 1.15, 1.15, 1.10, 1.15),
    "catering": (1.10, 1.05, 0.90, 0.95, 1.00, 1.00, 1.05, 1.05, 0.95, 1.05, 0.90, 1.00),
    "agriculture": (0.70, 0.60, 0.80, 0.90, 1.00, 1.10, 1.20, 1.30, 1.40, 1.30, 0.90, 0.80),
}
# Electricity peaks with summer air conditioning; water in summer.
_ELEC_SEASON: Final = (1.10, 1.00, 0.95, 0.90, 0.95, 1.10, 1.25, 1.25, 1.00, 0.90, 0.95, 1.05)
_WATER_SEASON: Final = (0.90, 0.85, 0.90, 0.95, 1.05, 1.15, 1.20, 1.20, 1.05, 0.95, 0.90, 0.90)

# Brand characters for synthetic Chinese company names.
_BRAND_CHARS: Final = tuple(
    "华中京盛鑫源达通信恒泰瑞博宏远新创智联和嘉福天宇安诚汇融星辰光明志永兴隆德润凯云"
)

# Round values registered capital is often declared at (CNY).
_ROUND_CAPITAL: Final = (
    1e4, 3e4, 5e4, 1e5, 2e5, 3e5, 5e5, 1e6, 2e6, 3e6, 5e6, 1e7, 2e7, 3e7, 5e7, 1e8, 2e8, 5e8, 1e9,
)  # fmt: skip

# Beijing social-insurance contribution base floor per year (CNY/month) and total rate.
_SI_MIN_BASE: Final = (5869.0, 6326.0, 6821.0)
_SI_RATE: Final = 0.37

# The observation window: 36 months, 2022-01 .. 2024-12.
N_MONTHS: Final = 36
MONTHS: Final = np.arange("2022-01", "2025-01", dtype="datetime64[M]")
_MONTH_DAYS: Final = MONTHS.astype("datetime64[D]").astype(np.int32)
_WINDOW_START_MONTH: Final = int(MONTHS[0].astype(np.int64))  # months since 1970-01
_FOUNDED_MIN: Final = int(np.datetime64("1980-01-01", "D").astype(np.int64))
_FOUNDED_MAX: Final = int(np.datetime64("2024-12-31", "D").astype(np.int64))
_USCC_REFORM: Final = int(np.datetime64("2015-10-01", "D").astype(np.int64))

# 2022 lockdown months in Beijing (May-June, November-December) depress revenue.
_MACRO: Final = np.ones(N_MONTHS)
_MACRO[[4, 5]] = 0.82
_MACRO[[10, 11]] = 0.78

# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------


def _f(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


SCHEMAS: Final[dict[str, pa.Schema]] = {
    "registry": pa.schema(
        [
            _f("credit_code", pa.string()),
            _f("name", pa.string()),
            _f("industry", pa.string()),
            _f("district", pa.string()),
            _f("founded", pa.date32()),
            _f("registered_capital", pa.float64()),
            _f("status", pa.string()),
        ]
    ),
    "tax": pa.schema(
        [
            _f("credit_code", pa.string()),
            _f("month", pa.date32()),
            _f("revenue", pa.float64()),
            _f("tax_paid", pa.float64()),
            _f("arrears", pa.bool_()),
        ]
    ),
    "social_insurance": pa.schema(
        [
            _f("credit_code", pa.string()),
            _f("month", pa.date32()),
            _f("headcount", pa.int64()),
            _f("amount", pa.float64()),
            _f("arrears", pa.bool_()),
        ]
    ),
    "utilities": pa.schema(
        [
            _f("credit_code", pa.string()),
            _f("month", pa.date32()),
            _f("electricity_kwh", pa.float64()),
            _f("water_m3", pa.float64()),
        ]
    ),
}

# ---------------------------------------------------------------------------------------------
# Unified social credit codes (GB 32100-2015)
# ---------------------------------------------------------------------------------------------

_USCC_CHARSET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_USCC_ASCII: Final = np.frombuffer(_USCC_CHARSET.encode("ascii"), dtype=np.uint8)
_USCC_WEIGHTS: Final = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)
# GB 11714 (organisation code): character values (digits as is, A=10 .. Z=35) and weights.
_GB11714_VALUE: Final = np.array(
    [int(c) if c.isdigit() else ord(c) - 55 for c in _USCC_CHARSET], dtype=np.int64
)
_GB11714_WEIGHTS: Final = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_M, _A, _X = (_USCC_CHARSET.index(c) for c in "MAX")
# Bijections of the enterprise index onto organisation-code bodies keep codes unique.
_DIGIT_SPACE: Final = 10**8
_MA_SPACE: Final = 31**6
_DIGIT_MULT: Final = 73_856_093  # coprime to 10**8
_MA_MULT: Final = 19_349_669  # coprime to 31


def credit_code_check_char(first17: str) -> str:
    """Return the GB 32100-2015 check character for the first 17 characters of a credit code."""
    if len(first17) != 17 or any(c not in _USCC_CHARSET for c in first17):
        raise ValueError("expected 17 characters from the credit-code character set")
    total = sum(
        _USCC_CHARSET.index(c) * int(w) for c, w in zip(first17, _USCC_WEIGHTS, strict=True)
    )
    return _USCC_CHARSET[(31 - total % 31) % 31]


def _credit_codes(
    enterprise_index: I64, district: I64, founded: I64, offsets: tuple[int, int]
) -> pa.StringArray:
    """Vectorised credit codes: ``9`` ``1`` + division code + organisation code + check."""
    n = len(enterprise_index)
    vals = np.empty((n, 18), dtype=np.int64)
    vals[:, 0] = 9  # registered by market regulation (工商)
    vals[:, 1] = 1  # enterprise
    division = np.array([[int(c) for c in row[1]] for row in _DISTRICT_ROWS], dtype=np.int64)
    vals[:, 2:8] = division[district]

    # Organisation code body (8 characters) then its GB 11714 check character.
    digit_body = (enterprise_index * _DIGIT_MULT + offsets[0]) % _DIGIT_SPACE
    ma_body = (enterprise_index * _MA_MULT + offsets[1]) % _MA_SPACE
    body = np.empty((n, 8), dtype=np.int64)
    for i in range(8):  # eight columns, not rows
        body[:, 7 - i] = digit_body // 10**i % 10
    new_scheme = founded >= _USCC_REFORM  # codes issued after the reform start with "MA"
    ma = np.empty((n, 8), dtype=np.int64)
    ma[:, 0], ma[:, 1] = _M, _A
    for i in range(6):
        ma[:, 7 - i] = ma_body // 31**i % 31
    body = np.where(new_scheme[:, None], ma, body)
    check = 11 - (_GB11714_VALUE[body] * _GB11714_WEIGHTS).sum(axis=1) % 11
    check = np.where(check == 11, 0, np.where(check == 10, _X, check))
    vals[:, 8:16] = body
    vals[:, 16] = check
    vals[:, 17] = (31 - (vals[:, :17] * _USCC_WEIGHTS).sum(axis=1) % 31) % 31

    data = np.ascontiguousarray(_USCC_ASCII[vals])
    value_offsets = np.arange(0, 18 * (n + 1), 18, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(value_offsets), pa.py_buffer(data)]
    )


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def _normalised(pattern: tuple[float, ...]) -> F64:
    arr = np.asarray(pattern, dtype=np.float64)
    result: F64 = arr / arr.mean()
    return result


_DISTRICT_P: Final = _normalised(tuple(r[2] for r in _DISTRICT_ROWS)) / len(_DISTRICT_ROWS)
_INDUSTRY_P: Final = _normalised(tuple(r[1] for r in _INDUSTRY_ROWS)) / len(_INDUSTRY_ROWS)
_IND_REV: Final = np.array([r[2] for r in _INDUSTRY_ROWS])
_IND_SEASON: Final = np.stack([_normalised(_SEASON_PATTERNS[r[3]]) for r in _INDUSTRY_ROWS])
_IND_KWH: Final = np.array([r[4] for r in _INDUSTRY_ROWS])
_IND_WATER: Final = np.array([r[5] for r in _INDUSTRY_ROWS])
_IND_SUFFIX: Final = pa.array([r[6] for r in _INDUSTRY_ROWS])
_ELEC: Final = _normalised(_ELEC_SEASON)
_WATER: Final = _normalised(_WATER_SEASON)
_T: Final = np.arange(N_MONTHS)
_MOY: Final = _T % 12
_YEAR: Final = _T // 12
_LOG_ROUND_CAPITAL: Final = np.log(np.asarray(_ROUND_CAPITAL))


def _code_offsets(seed: int) -> tuple[int, int]:
    state = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(state[0]) % _DIGIT_SPACE, int(state[1]) % _MA_SPACE


def _runs(rng: np.random.Generator, n: int, p: F64, mean_len: float, open_p: float) -> BoolArr:
    """A (n, 36) mask with at most one contiguous run per row (probability ``p`` per row)."""
    has = rng.random(n) < p
    start = rng.integers(0, N_MONTHS, n)
    length = rng.geometric(1.0 / mean_len, n)
    length = np.where(rng.random(n) < open_p, N_MONTHS, length)
    end = start + length
    return (start[:, None] <= _T) & (end[:, None] > _T) & has[:, None]


def _month_index(days: I64) -> I64:
    """Month index relative to 2022-01 of a day number (days since 1970-01-01)."""
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return months - _WINDOW_START_MONTH


def _block(seed: int, block: int, count: int, offsets: tuple[int, int]) -> dict[str, pa.Table]:
    """Tables for the first ``count`` enterprises of block ``block`` (always draws a full block)."""
    n = BLOCK_ENTERPRISES
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
    shape = (n, N_MONTHS)

    # --- registry --------------------------------------------------------------------------
    district = rng.choice(len(DISTRICTS), size=n, p=_DISTRICT_P)
    industry = rng.choice(len(INDUSTRIES), size=n, p=_INDUSTRY_P)
    status = rng.choice(len(STATUSES), size=n, p=_STATUS_P)
    age_years = rng.exponential(9.0, n)
    founded = _FOUNDED_MAX - np.minimum(
        np.floor(age_years * 365.25), _FOUNDED_MAX - _FOUNDED_MIN
    ).astype(np.int64)
    exited = (status == _REVOKED) | (status == _DEREGISTERED)
    exit_day = founded + np.floor(rng.random(n) * (_FOUNDED_MAX - founded)).astype(np.int64)
    u = rng.random(n)
    dormant = ((status == _IN_BUSINESS) & (u < 0.06)) | ((status == _ABNORMAL) & (u < 0.5))

    log_scale = (
        np.log(80_000.0)
        + np.log(_IND_REV[industry])
        + 0.04 * (np.minimum(age_years, 30.0) - 9.0)
        + 1.7 * rng.standard_normal(n)
    )
    scale = np.exp(log_scale)
    log_cap = np.log(1e6) + 0.5 * (log_scale - np.log(80_000.0)) + 1.2 * rng.standard_normal(n)
    nearest = np.abs(log_cap[:, None] - _LOG_ROUND_CAPITAL).argmin(axis=1)
    capital = np.where(
        rng.random(n) < 0.6,
        np.asarray(_ROUND_CAPITAL)[nearest],
        np.maximum(np.round(np.exp(log_cap), -4), 1e4),
    )

    # --- activity window -------------------------------------------------------------------
    first = _month_index(founded)
    last = np.where(exited, _month_index(exit_day), N_MONTHS)
    active = (first[:, None] <= _T) & (last[:, None] >= _T)

    # --- tax ------------------------------------------------------------------------------
    season = _IND_SEASON[industry][:, _MOY]
    growth = np.exp(rng.normal(0.04, 0.12, n)[:, None] * _T / 12.0)
    months_open = _T - first[:, None]
    ramp = 1.0 - np.exp(-(np.maximum(months_open, 0) + 1) / 3.0)
    sigma = rng.uniform(0.1, 0.45, n)
    noise = np.exp(sigma[:, None] * rng.standard_normal(shape))
    revenue = scale[:, None] * season * growth * _MACRO * ramp * noise
    p_zero = np.where(rng.random(n) < 0.2, rng.uniform(0.05, 0.3, n), 0.01)
    p_zero = np.where(dormant, 1.0, p_zero)
    zero = rng.random(shape) < p_zero[:, None]
    revenue = np.where(zero, 0.0, np.round(revenue, 2))

    general = scale > 400_000.0  # general VAT taxpayers; the rest are small-scale
    rate = np.where(general, np.exp(rng.normal(np.log(0.045), 0.3, n)), 0.015)
    quarterly = np.where(_MOY % 3 == 0, 1.6, 0.7)  # corporate income tax prepaid quarterly
    tax_noise = np.exp(0.2 * rng.standard_normal(shape))
    tax_paid = revenue * rate[:, None] * np.where(general[:, None], quarterly, 1.0) * tax_noise
    exempt = ~general[:, None] & (revenue <= 100_000.0)
    tax_paid = np.where(exempt, 0.0, np.round(tax_paid, 2))

    gap_u = rng.random(n)
    p_sporadic = np.where(status == _ABNORMAL, 0.35, rng.uniform(0.03, 0.15, n))
    sporadic = (gap_u < 0.1) | (status == _ABNORMAL)
    missing = sporadic[:, None] & (rng.random(shape) < p_sporadic[:, None])
    run_p = np.where(gap_u > 0.95, 1.0, 0.0)
    missing |= _runs(rng, n, run_p, mean_len=4.0, open_p=0.0)
    filed = active & ~missing

    arrears_p = np.where(status == _ABNORMAL, 0.45, np.where(dormant, 0.1, 0.07))
    tax_arrears = _runs(rng, n, arrears_p, mean_len=5.0, open_p=0.15)
    tax_arrears |= rng.random(shape) < 0.004

    # --- social insurance ------------------------------------------------------------------
    rev_per_head = np.exp(np.log(30_000.0) + 0.5 * rng.standard_normal(n))
    head_base = np.where(dormant, 1.0, np.maximum(np.round(scale / rev_per_head), 1.0))
    drift = np.cumsum(rng.normal(0.0, 0.03, shape), axis=1)
    headcount = np.maximum(np.round(head_base[:, None] * np.exp(drift)), 0.0).astype(np.int64)
    has_si = rng.random(n) < np.where(dormant, 0.25, 0.9)
    si_missing = (rng.random(n) < 0.1)[:, None] & (rng.random(shape) < 0.03)
    si_paid = active & has_si[:, None] & ~si_missing
    wage = np.exp(rng.normal(np.log(9_000.0), 0.35, n))[:, None] * 1.04**_YEAR
    per_head = np.maximum(wage, np.asarray(_SI_MIN_BASE)[_YEAR]) * _SI_RATE
    amount = np.round(headcount * per_head * np.exp(0.01 * rng.standard_normal(shape)), 2)
    copy = rng.random(n) < 0.6
    shift = rng.integers(0, 3, n)
    shifted = np.zeros(shape, dtype=np.bool_)
    for k in range(3):  # shift the tax arrears run by 0..2 months, three column slices
        rows = shift == k
        shifted[rows, k:] = tax_arrears[rows, : N_MONTHS - k]
    si_arrears = (copy[:, None] & shifted) | _runs(rng, n, np.full(n, 0.03), 4.0, 0.1)
    si_arrears |= rng.random(shape) < 0.003

    # --- utilities -------------------------------------------------------------------------
    has_meter = rng.random(n) < 0.9
    util_missing = rng.random(shape) < 0.01
    billed = active & has_meter[:, None] & ~util_missing
    idle = zero & (rng.random(shape) < 0.7)
    activity = np.where(dormant[:, None] | idle, 0.0, np.where(zero, 0.3, 1.0))
    base_kwh = rng.uniform(100.0, 600.0, n) + _IND_KWH[industry] * head_base
    electricity = base_kwh[:, None] * _ELEC[_MOY] * np.exp(0.15 * rng.standard_normal(shape))
    electricity = np.round(electricity * activity, 1)
    base_water = rng.uniform(1.0, 10.0, n) + _IND_WATER[industry] * head_base
    water = base_water[:, None] * _WATER[_MOY] * np.exp(0.2 * rng.standard_normal(shape))
    water = np.round(water * activity, 1)

    # --- names (drawn last so that earlier draws do not depend on them) --------------------
    brand = pa.array(_BRAND_CHARS)
    b1 = brand.take(rng.integers(0, len(_BRAND_CHARS), n))
    b2 = brand.take(rng.integers(0, len(_BRAND_CHARS), n))
    branch = rng.random(n) < 0.15  # "XX(北京)科技有限公司" (full-width brackets) not "北京XX..."
    prefix = pa.array(np.where(branch, "", "北京"))
    infix = pa.array(np.where(branch, "\uff08北京\uff09", ""))

    # --- keep the first `count` enterprises and build the tables ---------------------------
    keep = slice(0, count)
    index = block * n + np.arange(count, dtype=np.int64)
    codes = _credit_codes(index, district[keep], founded[keep], offsets)
    name = pc.binary_join_element_wise(
        prefix[keep], b1[keep], b2[keep], infix[keep], _IND_SUFFIX.take(industry[keep]), ""
    )
    registry = pa.table(
        [
            codes,
            name,
            pa.array(INDUSTRIES).take(industry[keep]),
            pa.array(DISTRICTS).take(district[keep]),
            pa.array(founded[keep].astype(np.int32), type=pa.date32()),
            pa.array(capital[keep]),
            pa.array(STATUSES).take(status[keep]),
        ],
        schema=SCHEMAS["registry"],
    )

    def monthly(mask: BoolArr, columns: list[npt.NDArray[np.generic]], table: str) -> pa.Table:
        mask = mask[keep]
        ent, month = np.nonzero(mask)  # row-major: by enterprise, then month
        arrays = [
            codes.take(ent),
            pa.array(_MONTH_DAYS[month], type=pa.date32()),
            *(pa.array(col[keep][mask]) for col in columns),
        ]
        return pa.table(arrays, schema=SCHEMAS[table])

    return {
        "registry": registry,
        "tax": monthly(filed, [revenue, tax_paid, tax_arrears], "tax"),
        "social_insurance": monthly(si_paid, [headcount, amount, si_arrears], "social_insurance"),
        "utilities": monthly(billed, [electricity, water], "utilities"),
    }


def generate(enterprises: int, seed: int = DEFAULT_SEED) -> dict[str, pa.Table]:
    """Generate the four tables for ``enterprises`` enterprises, in memory.

    The same ``(enterprises, seed)`` always gives identical tables, and the first ``k``
    enterprises of a larger call are the same as those of ``generate(k, seed)``.
    """
    if enterprises < 1:
        raise ValueError("enterprises must be at least 1")
    offsets = _code_offsets(seed)
    parts: dict[str, list[pa.Table]] = {t: [] for t in TABLES}
    for block in range(-(-enterprises // BLOCK_ENTERPRISES)):
        count = min(BLOCK_ENTERPRISES, enterprises - block * BLOCK_ENTERPRISES)
        for table, data in _block(seed, block, count, offsets).items():
            parts[table].append(data)
    return {t: pa.concat_tables(parts[t]).combine_chunks() for t in TABLES}


def _truncate(tables: dict[str, pa.Table], enterprises: int) -> dict[str, pa.Table]:
    """Keep the first ``enterprises`` registry rows and their monthly rows."""
    keep = tables["registry"].column("credit_code").slice(0, enterprises)
    out = {"registry": tables["registry"].slice(0, enterprises)}
    for table in TABLES[1:]:
        data = tables[table]
        out[table] = data.filter(pc.is_in(data.column("credit_code"), value_set=keep))
    return out


def write_parquet(
    out_dir: Path,
    rows: int,
    seed: int = DEFAULT_SEED,
    progress: Callable[[int], None] | None = None,
    *,
    chunk_enterprises: int = DEFAULT_CHUNK_ENTERPRISES,
) -> dict[str, Path]:
    """Stream the four tables to ``<out_dir>/<table>.parquet`` with bounded memory.

    Enterprises are added until the ``tax`` table has at least ``rows`` rows (it ends with at most
    35 more, since one enterprise adds at most 36). The files hold exactly what
    ``generate(n, seed)`` returns for the resulting number ``n`` of enterprises, whatever
    ``chunk_enterprises`` is (it only sets the row-group size, rounded up to whole blocks).
    ``progress`` is called after each chunk with the number of ``tax`` rows written so far.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    if chunk_enterprises < 1:
        raise ValueError("chunk_enterprises must be at least 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {t: out_dir / f"{t}.parquet" for t in TABLES}
    blocks_per_chunk = -(-chunk_enterprises // BLOCK_ENTERPRISES)
    offsets = _code_offsets(seed)
    writers = {t: pq.ParquetWriter(paths[t], SCHEMAS[t], compression="zstd") for t in TABLES}
    written = 0
    block = 0
    try:
        while written < rows:
            parts: dict[str, list[pa.Table]] = {t: [] for t in TABLES}
            for _ in range(blocks_per_chunk):
                data = _block(seed, block, BLOCK_ENTERPRISES, offsets)
                block += 1
                tax_rows = data["tax"].num_rows
                if written + tax_rows >= rows:
                    data = _truncate(data, _enterprises_needed(data, rows - written))
                for t in TABLES:
                    parts[t].append(data[t])
                written += data["tax"].num_rows
                if written >= rows:
                    break
            for t in TABLES:
                writers[t].write_table(pa.concat_tables(parts[t]))
            if progress is not None:
                progress(written)
    finally:
        for writer in writers.values():
            writer.close()
    return paths


def _enterprises_needed(data: dict[str, pa.Table], rows: int) -> int:
    """Smallest number of leading enterprises whose ``tax`` rows reach ``rows``."""
    codes = data["registry"].column("credit_code")
    tax_codes = data["tax"].column("credit_code")
    # Rows are ordered by enterprise; count rows per enterprise in registry order.
    position = pc.index_in(tax_codes, value_set=codes).to_numpy()
    per_enterprise = np.bincount(position, minlength=len(codes))
    cumulative = np.cumsum(per_enterprise)
    return int(np.searchsorted(cumulative, rows)) + 1
