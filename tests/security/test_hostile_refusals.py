"""Hostile queries refused by the gate, end to end through the real app, grouped by attack class.

Every case goes to ``POST /v1/queries`` as the demo analyst and must come back as a problem
document with its exact stable rule code (status 400), with no engine text, server path or data
value in it, and with the ledger and every budget exactly as before: a rejection never touches
data, so it is never charged. ``HOSTILE_CLASSES`` below is the inventory; ``test_inventory``
prints the count per class (``pytest -s``) and holds the suite to at least 60 inputs.

The classes answered under DP instead of refused (difference attacks, rare group keys, literals
that single out one unit) are in ``test_hostile_answered.py``; privacy parameters in
``test_hostile_budget.py``; huge and deeply nested SQL in ``test_hostile_size.py``; what the
engine's lockdown does if the gate ever let one of these through, in ``test_hostile_engine.py``.

Placeholders: ``<SECRET>`` becomes a literal that must never be echoed, ``<CODE>`` and ``<NAME>``
a real privacy-unit id and a real (hidden) enterprise name of the demo data.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.hostile import HOSTILE_SECRET, HostileService


def case(name: str, sql: str, code: str, subject: str | None = None) -> Any:
    return pytest.param(sql, code, subject, id=name)


HOSTILE_CLASSES: dict[str, list[Any]] = {
    # Every DuckDB reader, replacement scans on paths and URLs, writers, the temp directory.
    "files_and_urls": [
        case(
            "read_csv",
            "SELECT count(*) FROM read_csv('/etc/passwd')",
            "unsupported_function",
            "read_csv",
        ),
        case(
            "read_csv_auto",
            "SELECT count(*) FROM read_csv_auto('/etc/passwd')",
            "unsupported_function",
            "read_csv_auto",
        ),
        case(
            "read_text",
            "SELECT count(*) FROM read_text('/etc/passwd')",
            "unsupported_function",
            "read_text",
        ),
        case(
            "read_blob",
            "SELECT count(*) FROM read_blob('/etc/passwd')",
            "unsupported_function",
            "read_blob",
        ),
        case(
            "read_json",
            "SELECT count(*) FROM read_json('/etc/passwd')",
            "unsupported_function",
            "read_json",
        ),
        case(
            "read_json_auto",
            "SELECT count(*) FROM read_json_auto('/etc/passwd')",
            "unsupported_function",
            "read_json_auto",
        ),
        case(
            "read_ndjson",
            "SELECT count(*) FROM read_ndjson('/etc/passwd')",
            "unsupported_function",
            "read_ndjson",
        ),
        case(
            "read_parquet",
            "SELECT count(*) FROM read_parquet('/data/x.parquet')",
            "unsupported_function",
            "read_parquet",
        ),
        case(
            "parquet_scan",
            "SELECT count(*) FROM parquet_scan('/data/x.parquet')",
            "unsupported_function",
            "parquet_scan",
        ),
        case(
            "parquet_metadata",
            "SELECT count(*) FROM parquet_metadata('/data/x.parquet')",
            "unsupported_function",
            "parquet_metadata",
        ),
        case(
            "parquet_schema",
            "SELECT count(*) FROM parquet_schema('/data/x.parquet')",
            "unsupported_function",
            "parquet_schema",
        ),
        case("glob", "SELECT count(*) FROM glob('/*')", "unsupported_function", "glob"),
        case(
            "sniff_csv",
            "SELECT count(*) FROM sniff_csv('/etc/passwd')",
            "unsupported_function",
            "sniff_csv",
        ),
        case(
            "reader_list",
            "SELECT count(*) FROM read_csv(['/etc/passwd', '/etc/hosts'])",
            "unsupported_function",
            "read_csv",
        ),
        case("path_as_table", "SELECT count(*) FROM '/etc/passwd'", "unknown_table", ""),
        case("quoted_path_as_table", 'SELECT count(*) FROM "/etc/hosts.csv"', "unknown_table", ""),
        case("dotted_file_name", "SELECT count(*) FROM tax.csv", "unsupported_clause", "db"),
        case(
            "url_metadata_address",
            "SELECT count(*) FROM 'http://169.254.169.254/latest/meta-data/'",
            "unknown_table",
            "",
        ),
        case(
            "url_s3",
            "SELECT count(*) FROM 's3://bucket/x.parquet'",
            "unknown_table",
            "",
        ),
        case(
            "url_reader",
            "SELECT count(*) FROM read_csv('https://example.com/<SECRET>.csv')",
            "unsupported_function",
            "read_csv",
        ),
        case(
            "reader_in_join",
            "SELECT count(*) FROM tax JOIN read_csv('/etc/passwd') p USING (credit_code)",
            "unsupported_function",
            "read_csv",
        ),
        case(
            "reader_in_comma_join",
            "SELECT count(*) FROM tax, read_text('/etc/passwd')",
            "unsupported_function",
            "read_text",
        ),
        case(
            "reader_in_where",
            "SELECT count(*) FROM registry WHERE industry = read_text('/etc/passwd')",
            "unsupported_function",
            "read_text",
        ),
        case(
            "reader_in_subquery",
            "SELECT count(*) FROM registry WHERE industry IN "
            "(SELECT content FROM read_text('/etc/passwd'))",
            "unsupported_clause",
            "subquery",
        ),
        case(
            "temp_dir_reader",
            "SELECT count(*) FROM read_csv('/var/tmp/veil/tmp/spill.csv')",
            "unsupported_function",
            "read_csv",
        ),
        case(
            "temp_dir_glob", "SELECT count(*) FROM glob('tmp/**')", "unsupported_function", "glob"
        ),
        case("copy_to", "COPY tax TO '/tmp/out.csv'", "not_select", "copy"),
        case(
            "copy_query_to_temp",
            "COPY (SELECT * FROM tax) TO 'tmp/x.parquet' (FORMAT parquet)",
            "not_select",
            "copy",
        ),
        case("copy_from", "COPY registry FROM '/etc/passwd'", "not_select", "copy"),
        case("export_database", "EXPORT DATABASE '/tmp/export'", "syntax_error", ""),
        case("import_database", "IMPORT DATABASE '/tmp/export'", "syntax_error", ""),
    ],
    "attach_and_cross_workspace": [
        case(
            "attach_file", "ATTACH 'workspaces/cps1988/v1.duckdb' AS other", "not_select", "attach"
        ),
        case("attach_memory", "ATTACH ':memory:' AS m", "not_select", "attach"),
        case(
            "attach_postgres", "ATTACH 'dbname=veil' AS p (TYPE postgres)", "not_select", "attach"
        ),
        case("detach", "DETACH v1", "not_select", "detach"),
        case("use", "USE other", "not_select", "use"),
        case(
            "catalog_qualified", "SELECT count(*) FROM other.main.tax", "unsupported_clause", "db"
        ),
        case("schema_qualified", "SELECT count(*) FROM main.tax", "unsupported_clause", "db"),
        case(
            "system_catalog",
            "SELECT count(*) FROM system.main.duckdb_settings",
            "unsupported_clause",
            "db",
        ),
        case("other_dataset_table", "SELECT count(*) FROM cps1988", "unknown_table", "cps1988"),
        case(
            "join_other_dataset",
            "SELECT count(*) FROM registry JOIN cps1988 ON registry.credit_code = "
            "cps1988.person_id",
            "unknown_table",
            "cps1988",
        ),
        case(
            "join_other_catalog",
            "SELECT count(*) FROM tax t JOIN other.main.tax o ON t.credit_code = o.credit_code",
            "unsupported_clause",
            "db",
        ),
    ],
    "install_and_load": [
        case("install", "INSTALL httpfs", "not_select", "install"),
        case("force_install", "FORCE INSTALL httpfs", "not_select", "install"),
        case(
            "install_from_url", "INSTALL httpfs FROM 'http://example.com'", "not_select", "install"
        ),
        case("load", "LOAD httpfs", "not_select", "command"),
        case("load_path", "LOAD '/tmp/evil.duckdb_extension'", "not_select", "command"),
        case("update_extensions", "UPDATE EXTENSIONS", "not_select", "update"),
        case(
            "create_secret",
            "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET '<SECRET>')",
            "not_select",
            "command",
        ),
        case(
            "list_extensions",
            "SELECT count(*) FROM duckdb_extensions()",
            "unsupported_function",
            "duckdb_extensions",
        ),
    ],
    "set_reset_pragma_call": [
        case("set_memory", "SET memory_limit = '100GB'", "not_select", "set"),
        case(
            "set_external_access", "SET GLOBAL enable_external_access = true", "not_select", "set"
        ),
        case("unlock", "SET lock_configuration = false", "not_select", "set"),
        case("reset", "RESET lock_configuration", "not_select", "command"),
        case("reset_all", "RESET ALL", "not_select", "command"),
        case("pragma", "PRAGMA enable_profiling", "not_select", "pragma"),
        case("pragma_database_list", "PRAGMA database_list", "not_select", "pragma"),
        case("call", "CALL pragma_version()", "not_select", "command"),
        case("call_settings", "CALL duckdb_settings()", "not_select", "command"),
        case("checkpoint", "CHECKPOINT", "not_select", "column"),
        case("vacuum", "VACUUM", "not_select", "command"),
        case("transaction", "BEGIN TRANSACTION", "not_select", "transaction"),
    ],
    # Functions that leak server paths, settings or per-segment extremes.
    "metadata": [
        case(
            "duckdb_settings",
            "SELECT count(*) FROM duckdb_settings()",
            "unsupported_function",
            "duckdb_settings",
        ),
        case(
            "duckdb_databases",
            "SELECT count(*) FROM duckdb_databases()",
            "unsupported_function",
            "duckdb_databases",
        ),
        case(
            "duckdb_tables",
            "SELECT count(*) FROM duckdb_tables()",
            "unsupported_function",
            "duckdb_tables",
        ),
        case(
            "duckdb_columns",
            "SELECT count(*) FROM duckdb_columns()",
            "unsupported_function",
            "duckdb_columns",
        ),
        case(
            "duckdb_temporary_files",
            "SELECT count(*) FROM duckdb_temporary_files()",
            "unsupported_function",
            "duckdb_temporary_files",
        ),
        case(
            "pragma_storage_info",
            "SELECT count(*) FROM pragma_storage_info('tax')",
            "unsupported_function",
            "pragma_storage_info",
        ),
        case(
            "pragma_table_info",
            "SELECT count(*) FROM pragma_table_info('tax')",
            "unsupported_function",
            "pragma_table_info",
        ),
        case(
            "information_schema",
            "SELECT count(*) FROM information_schema.tables",
            "unsupported_clause",
            "db",
        ),
        case(
            "sqlite_master", "SELECT count(*) FROM sqlite_master", "unknown_table", "sqlite_master"
        ),
        case(
            "current_setting",
            "SELECT count(*) FROM registry WHERE industry = current_setting('temp_directory')",
            "unsupported_function",
            "current_setting",
        ),
        case(
            "version",
            "SELECT count(*) FROM registry WHERE industry = version()",
            "unsupported_function",
            "version",
        ),
        case(
            "current_database",
            "SELECT count(*) FROM registry WHERE industry = current_database()",
            "unsupported_function",
            "current_database",
        ),
        case(
            "getenv",
            "SELECT count(*) FROM registry WHERE industry = getenv('HOME')",
            "unsupported_function",
            "getenv",
        ),
    ],
    "dynamic_sql": [
        case(
            "query",
            "SELECT count(*) FROM query('SELECT * FROM tax')",
            "unsupported_function",
            "query",
        ),
        case(
            "query_table",
            "SELECT count(*) FROM query_table('tax')",
            "unsupported_function",
            "query_table",
        ),
        case(
            "query_table_list",
            "SELECT count(*) FROM query_table(['tax', 'registry'])",
            "unsupported_function",
            "query_table",
        ),
        case(
            "query_in_where",
            "SELECT count(*) FROM tax WHERE arrears = query('SELECT true')",
            "unsupported_function",
            "query",
        ),
        case(
            "query_in_subquery",
            "SELECT count(*) FROM registry WHERE industry = (FROM query('SELECT 1'))",
            "unsupported_clause",
            "subquery",
        ),
        case("call_query", "CALL query('SELECT * FROM tax')", "not_select", "command"),
    ],
    "multi_statement": [
        case("then_drop", "SELECT count(*) FROM tax; DROP TABLE tax", "multiple_statements", ""),
        case(
            "then_select_star",
            "SELECT count(*) FROM tax; SELECT * FROM tax",
            "multiple_statements",
            "",
        ),
        case(
            "then_copy",
            "SELECT count(*) FROM tax; COPY tax TO '/tmp/x.csv'",
            "multiple_statements",
            "",
        ),
        case(
            "then_attach",
            "SELECT count(*) FROM tax; ATTACH '/tmp/x.duckdb' AS x",
            "multiple_statements",
            "",
        ),
        case(
            "then_set",
            "SELECT count(*) FROM tax;\nSET enable_external_access = true",
            "multiple_statements",
            "",
        ),
        case(
            "set_then_select",
            "SET VARIABLE v = 1; SELECT count(*) FROM tax",
            "multiple_statements",
            "",
        ),
    ],
    "prepare_temp_objects_variables": [
        case("prepare", "PREPARE p AS SELECT * FROM tax", "not_select", "command"),
        case("execute", "EXECUTE p", "not_select", "command"),
        case("deallocate", "DEALLOCATE p", "not_select", "alias"),
        case("temp_table", "CREATE TEMP TABLE t AS SELECT * FROM tax", "not_select", "create"),
        case("temp_view", "CREATE TEMP VIEW v AS SELECT * FROM tax", "not_select", "create"),
        case("macro", "CREATE MACRO leak(x) AS x", "not_select", "create"),
        case(
            "table_macro",
            "CREATE OR REPLACE TEMP MACRO leak() AS TABLE SELECT * FROM tax",
            "not_select",
            "create",
        ),
        case("set_variable", "SET VARIABLE v = 42", "not_select", "set"),
        case(
            "getvariable",
            "SELECT count(*) FROM tax WHERE revenue = getvariable('v')",
            "unsupported_function",
            "getvariable",
        ),
        case(
            "dollar_parameter",
            "SELECT count(*) FROM tax WHERE revenue = $v",
            "unsupported_expression",
            "placeholder",
        ),
        case(
            "positional_parameter",
            "SELECT count(*) FROM tax WHERE revenue = $1",
            "unsupported_expression",
            "placeholder",
        ),
        case(
            "question_parameter",
            "SELECT count(*) FROM tax WHERE revenue = ?",
            "unsupported_expression",
            "placeholder",
        ),
    ],
    "raw_rows_and_extremes": [
        case("select_star", "SELECT * FROM tax", "raw_rows", "*"),
        case("star_with_count", "SELECT count(*), * FROM tax", "raw_rows", "*"),
        case("star_exclude", "SELECT * EXCLUDE (credit_code) FROM tax", "raw_rows", "*"),
        case("from_first", "FROM tax", "raw_rows", "*"),
        case("row_as_struct", "SELECT tax FROM tax", "raw_rows", "tax"),
        case("columns_star", "SELECT COLUMNS(*) FROM tax", "unsupported_function", "columns"),
        case("bare_column", "SELECT industry FROM registry", "raw_rows", "industry"),
        case("summarize", "SUMMARIZE tax", "not_select", "summarize"),
        case("summarize_query", "SUMMARIZE SELECT * FROM tax", "not_select", "summarize"),
        case("describe", "DESCRIBE tax", "not_select", "describe"),
        case("show_tables", "SHOW TABLES", "not_select", "show"),
        case("list", "SELECT list(revenue) FROM tax", "unsupported_function", "array_agg"),
        case(
            "string_agg",
            "SELECT string_agg(industry, ',') FROM registry",
            "unsupported_function",
            "listagg",
        ),
        case(
            "arg_max",
            "SELECT arg_max(credit_code, revenue) FROM tax",
            "unsupported_function",
            "arg_max",
        ),
        case(
            "max_by",
            "SELECT max_by(credit_code, revenue) FROM tax",
            "unsupported_function",
            "arg_max",
        ),
        case("min", "SELECT min(revenue) FROM tax", "unsupported_function", "min"),
        case("max", "SELECT max(registered_capital) FROM registry", "unsupported_function", "max"),
        case("mode", "SELECT mode(revenue) FROM tax", "unsupported_function", "mode"),
        case("first", "SELECT first(revenue) FROM tax", "unsupported_function", "first"),
        case(
            "quantile_disc",
            "SELECT quantile_disc(revenue, 0.999) FROM tax",
            "unsupported_function",
            "quantile_disc",
        ),
        case(
            "approx_quantile",
            "SELECT approx_quantile(revenue, 0.999) FROM tax",
            "unsupported_function",
            "approx_quantile",
        ),
        case(
            "histogram",
            "SELECT histogram(industry) FROM registry",
            "unsupported_function",
            "histogram",
        ),
        case(
            "approx_top_k",
            "SELECT approx_top_k(industry, 5) FROM registry",
            "unsupported_function",
            "approx_top_k",
        ),
        case(
            "max_over_window",
            "SELECT max(revenue) OVER () FROM tax",
            "unsupported_clause",
            "window",
        ),
        case(
            "group_by_measure",
            "SELECT count(*) FROM tax GROUP BY revenue",
            "column_not_groupable",
            "revenue",
        ),
        case(
            "group_by_unit",
            "SELECT credit_code, count(*) FROM tax GROUP BY credit_code",
            "unit_not_allowed",
            "credit_code",
        ),
        case(
            "count_distinct_measure",
            "SELECT count(DISTINCT revenue) FROM tax",
            "unsupported_aggregate",
            "count(distinct ...)",
        ),
    ],
    # Engine messages echo values; every shape that could make one is refused before the engine.
    "values_echoed_in_errors": [
        case(
            "error",
            "SELECT count(*) FROM tax WHERE error('<SECRET>')",
            "unsupported_function",
            "error",
        ),
        case(
            "error_of_column",
            "SELECT count(*) FROM registry WHERE industry = error(district)",
            "unsupported_function",
            "error",
        ),
        case(
            "cast",
            "SELECT count(*) FROM registry WHERE CAST(industry AS INTEGER) = 1",
            "unsupported_function",
            "cast",
        ),
        case(
            "cast_operator",
            "SELECT count(*) FROM registry WHERE industry::INTEGER = 1",
            "unsupported_function",
            "cast",
        ),
        case(
            "try_cast",
            "SELECT count(*) FROM registry WHERE TRY_CAST(industry AS INT) = 1",
            "unsupported_function",
            "try_cast",
        ),
        case(
            "enum_cast",
            "SELECT count(*) FROM registry WHERE industry = CAST('<SECRET>' AS ENUM('a'))",
            "type_mismatch",
            "literal",
        ),
        case(
            "strptime",
            "SELECT count(*) FROM registry WHERE founded = strptime(industry, '%Y')",
            "unsupported_function",
            "strptime",
        ),
        case(
            "overflow",
            "SELECT count(*) FROM tax WHERE revenue * 9223372036854775807 > 1",
            "unsupported_expression",
            "mul",
        ),
        case(
            "overflow_literal",
            "SELECT count(*) FROM tax WHERE revenue = 9223372036854775808",
            "invalid_literal",
            "number",
        ),
        case(
            "bad_date_literal",
            "SELECT count(*) FROM tax WHERE month = '<SECRET>'",
            "invalid_literal",
            "date",
        ),
        case(
            "string_for_number",
            "SELECT count(*) FROM tax WHERE revenue = '<SECRET>'",
            "type_mismatch",
            "literal",
        ),
        case(
            "hidden_column_in_function",
            "SELECT count(*) FROM registry WHERE industry = lower(name)",
            "unsupported_function",
            "lower",
        ),
    ],
    # An error that happens only when a secret condition holds leaks that condition.
    "error_oracles": [
        case(
            "case_division",
            "SELECT count(*) FROM registry WHERE CASE WHEN industry = "
            "'finance' THEN 1//0 ELSE 0 END = 0",
            "unsupported_function",
            "case",
        ),
        case(
            "sum_case_division",
            "SELECT sum(CASE WHEN industry = 'finance' THEN 1//0 ELSE 0 END) FROM registry",
            "aggregate_argument",
            "sum",
        ),
        case(
            "integer_division",
            "SELECT count(*) FROM tax WHERE revenue = 1//0",
            "unsupported_expression",
            "intdiv",
        ),
        case(
            "division",
            "SELECT count(*) FROM registry WHERE registered_capital / 0 > 1",
            "unsupported_expression",
            "div",
        ),
        case(
            "modulo",
            "SELECT count(*) FROM tax WHERE revenue % 0 = 1",
            "unsupported_expression",
            "mod",
        ),
        case(
            "error_and",
            "SELECT count(*) FROM registry WHERE industry = 'finance' AND error('x')",
            "unsupported_function",
            "error",
        ),
        case(
            "filter_clause",
            "SELECT count(*) FILTER (WHERE 1//0 = 0) FROM tax",
            "unsupported_clause",
            "filter",
        ),
    ],
    # Work that takes long only when a secret condition holds leaks it through the latency.
    "timing_oracles": [
        case(
            "case_repeat",
            "SELECT count(*) FROM registry WHERE CASE WHEN industry = 'finance' "
            "THEN length(repeat(industry, 20000000)) > 0 ELSE true END",
            "unsupported_function",
            "case",
        ),
        case(
            "case_lpad",
            "SELECT count(*) FROM registry WHERE CASE WHEN industry = 'finance' "
            "THEN length(lpad(industry, 200000000, 'x')) > 0 END",
            "unsupported_function",
            "case",
        ),
        case(
            "repeat",
            "SELECT count(*) FROM registry WHERE industry = repeat('a', 100000000)",
            "unsupported_function",
            "repeat",
        ),
        case(
            "lpad",
            "SELECT count(*) FROM registry WHERE industry = lpad('a', 100000000, 'b')",
            "unsupported_function",
            "lpad",
        ),
        case(
            "sum_of_repeat",
            "SELECT sum(length(repeat(industry, 1000000))) FROM registry",
            "aggregate_argument",
            "sum",
        ),
        case(
            "regex_backtracking",
            "SELECT count(*) FROM registry WHERE regexp_matches(industry, '(a+)+$')",
            "unsupported_function",
            "regexp_matches",
        ),
    ],
    "resource_bombs": [
        case(
            "range_table",
            "SELECT count(*) FROM range(1000000000000)",
            "unsupported_function",
            "range",
        ),
        case(
            "generate_series",
            "SELECT count(*) FROM generate_series(1, 1000000000000)",
            "unsupported_function",
            "generate_series",
        ),
        case(
            "range_list",
            "SELECT count(*) FROM tax WHERE len(range(0, 300000000)) > 0",
            "unsupported_function",
            "length",
        ),
        case(
            "list_resize",
            "SELECT count(*) FROM tax WHERE len(list_resize([1], 300000000)) > 0",
            "unsupported_function",
            "length",
        ),
        case(
            "unnest",
            "SELECT count(*) FROM unnest(range(1000000000))",
            "unsupported_function",
            "unnest",
        ),
        case(
            "recursive_cte",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
            "SELECT count(*) FROM tax",
            "unsupported_clause",
            "with",
        ),
        case("cross_join", "SELECT count(*) FROM tax CROSS JOIN registry", "unsupported_join", ""),
        case("comma_join", "SELECT count(*) FROM tax, registry", "unsupported_join", ""),
        case(
            "join_on_true", "SELECT count(*) FROM tax JOIN registry ON true", "unsupported_join", ""
        ),
        case(
            "join_not_on_unit",
            "SELECT count(*) FROM tax t JOIN social_insurance s ON t.month = s.month",
            "unsupported_join",
            "",
        ),
        case(
            "self_join",
            "SELECT count(*) FROM tax a JOIN tax b ON a.credit_code = b.credit_code",
            "unsupported_join",
            "tax",
        ),
        case(
            "three_tables",
            "SELECT count(*) FROM tax JOIN registry USING (credit_code) "
            "JOIN utilities USING (credit_code)",
            "unsupported_join",
            "",
        ),
    ],
    "sampling": [
        case(
            "tablesample_percent",
            "SELECT count(*) FROM tax TABLESAMPLE 10%",
            "unsupported_clause",
            "sample",
        ),
        case(
            "tablesample_reservoir",
            "SELECT count(*) FROM tax TABLESAMPLE RESERVOIR(10 ROWS)",
            "unsupported_clause",
            "sample",
        ),
        case(
            "using_sample",
            "SELECT count(*) FROM tax USING SAMPLE 10% (bernoulli)",
            "unsupported_clause",
            "sample",
        ),
        case(
            "using_sample_repeatable",
            "SELECT count(*) FROM tax USING SAMPLE reservoir(1 ROWS) REPEATABLE (42)",
            "unsupported_clause",
            "sample",
        ),
        case(
            "tablesample_system_alias",
            "SELECT count(*) FROM tax t TABLESAMPLE SYSTEM (1) REPEATABLE (7)",
            "unsupported_clause",
            "sample",
        ),
        case(
            "sample_after_join",
            "SELECT count(*) FROM tax JOIN registry USING (credit_code) USING SAMPLE 1 ROWS",
            "unsupported_clause",
            "sample",
        ),
        case("bare_sample", "SELECT count(*) FROM tax SAMPLE 1", "syntax_error", ""),
    ],
    # Qualified names whose last part is a literal: sqlglot makes them columns of a literal, and
    # these used to crash the checker (a 500). Found by mutating the other cases.
    "names_that_are_literals": [
        case(
            "dot_number",
            "SELECT count(*) FROM tax t WHERE t.5 = 1",
            "unsupported_expression",
            "column",
        ),
        case(
            "dot_number_in_count", "SELECT count(x.1) FROM tax", "unsupported_expression", "column"
        ),
        case(
            "dot_number_grouped",
            "SELECT count(*) FROM tax t GROUP BY t.5",
            "unsupported_expression",
            "column",
        ),
        case(
            "dot_string_unit",
            "SELECT count(*) FROM tax t JOIN registry r USING (credit_code) "
            "WHERE t.'credit_code' = '<CODE>'",
            "unsupported_expression",
            "column",
        ),
        case(
            "fuzzed",
            "SELECT count(*) FROM tax WHERE revenue = SETS .7976931348623157e309",
            "unsupported_expression",
            "column",
        ),
    ],
    # Literals that name one subject: on the privacy unit or a hidden column they are refused
    # (answered under DP otherwise: see test_hostile_answered.py).
    "identifier_literals_refused": [
        case(
            "unit_equals",
            "SELECT count(*) FROM registry WHERE credit_code = '<CODE>'",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_quoted",
            "SELECT count(*) FROM registry WHERE \"credit_code\" = '<CODE>'",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_qualified",
            "SELECT count(*) FROM registry r WHERE r.credit_code = '<CODE>'",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_upper_case",
            "SELECT count(*) FROM registry WHERE CREDIT_CODE = '<CODE>'",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_literal_first",
            "SELECT count(*) FROM registry WHERE '<CODE>' = credit_code",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_in",
            "SELECT count(*) FROM tax WHERE credit_code IN ('<CODE>', '<SECRET>')",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_between",
            "SELECT count(*) FROM tax WHERE credit_code BETWEEN '<CODE>' AND '<CODE>'",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_negated",
            "SELECT count(*) FROM tax WHERE NOT credit_code <> '<CODE>'",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_in_join_where",
            "SELECT count(*) FROM tax t JOIN registry r USING "
            "(credit_code) WHERE r.credit_code = '<CODE>'",
            "unit_filter",
            "credit_code",
        ),
        case(
            "unit_prefix",
            "SELECT count(*) FROM registry WHERE credit_code LIKE '<CODE>%'",
            "unsupported_expression",
            "like",
        ),
        case(
            "unit_hash",
            "SELECT count(*) FROM registry WHERE hash(credit_code) % 1000 = 7",
            "unsupported_expression",
            "mod",
        ),
        case(
            "hidden_name",
            "SELECT count(*) FROM registry WHERE name = '<NAME>'",
            "column_not_allowed",
            "name",
        ),
        case(
            "hidden_name_quoted",
            "SELECT count(*) FROM registry WHERE \"name\" = '<NAME>'",
            "column_not_allowed",
            "name",
        ),
        case(
            "hidden_name_in",
            "SELECT count(*) FROM registry WHERE name IN ('<NAME>')",
            "column_not_allowed",
            "name",
        ),
    ],
    # Bands are group keys with literals in them: none may carry an oracle, a unit, a hidden
    # column, a subquery or a reader, and no refused band echoes its literals.
    "bands": [
        case(
            "band_error_oracle",
            "SELECT CASE WHEN revenue < 1e6 THEN 1//0 ELSE 0 END AS b, count(*) "
            "FROM tax GROUP BY b",
            "invalid_band",
            "label",
        ),
        case(
            "band_unit_literal",
            "SELECT CASE WHEN credit_code < '<CODE>' THEN 'a' ELSE 'b' END AS b, count(*) "
            "FROM tax GROUP BY b",
            "unit_not_allowed",
            "credit_code",
        ),
        case(
            "band_hidden_name",
            "SELECT CASE WHEN name < '<NAME>' THEN 'a' ELSE 'b' END AS b, count(*) "
            "FROM registry GROUP BY b",
            "column_not_allowed",
            "name",
        ),
        case(
            "band_secret_labels_twice",
            "SELECT CASE WHEN revenue < 1 THEN '<SECRET>' ELSE '<SECRET>' END AS b, count(*) "
            "FROM tax GROUP BY b",
            "invalid_band",
            "labels",
        ),
        case(
            "band_subquery_cut",
            "SELECT CASE WHEN revenue < (SELECT max(revenue) FROM tax) THEN 'a' ELSE 'b' END "
            "AS b, count(*) FROM tax GROUP BY b",
            "invalid_band",
            "cut_point",
        ),
        case(
            "band_reader_label",
            "SELECT CASE WHEN revenue < 1 THEN read_text('/etc/passwd') ELSE 'b' END AS b, "
            "count(*) FROM tax GROUP BY b",
            "invalid_band",
            "label",
        ),
        case(
            "width_bucket_subquery_bound",
            "SELECT width_bucket(revenue, 0, (SELECT max(revenue) FROM tax), 4) AS w, count(*) "
            "FROM tax GROUP BY w",
            "invalid_band",
            "bounds",
        ),
        case(
            "band_in_where_secret",
            "SELECT count(*) FROM tax WHERE CASE WHEN revenue < 1 THEN '<SECRET>' ELSE 'b' END "
            "= '<SECRET>'",
            "unsupported_function",
            "case",
        ),
    ],
}

HOSTILE_CASES = [p for cases in HOSTILE_CLASSES.values() for p in cases]


def fill(sql: str, service: HostileService) -> str:
    codes = service.truth.column("registry", "credit_code")
    names = service.truth.column("registry", "name")
    return (
        sql.replace("<SECRET>", HOSTILE_SECRET)
        .replace("<CODE>", str(codes[0]))
        .replace("<NAME>", str(names[0]))
    )


def test_inventory() -> None:
    """At least 60 distinct hostile inputs here alone, and every class has several."""
    counts = {name: len(cases) for name, cases in HOSTILE_CLASSES.items()}
    width = max(map(len, counts))
    print("\nhostile inputs refused by the gate, per class:")
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:3d}")
    print(f"  {'total':<{width}}  {sum(counts.values()):3d}")
    assert sum(counts.values()) >= 60
    assert min(counts.values()) >= 5
    ids = [p.id for p in HOSTILE_CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("sql", "code", "subject"), HOSTILE_CASES)
def test_refused_with_its_rule_and_not_charged(
    hostile_service: HostileService, sql: str, code: str, subject: str | None
) -> None:
    before = hostile_service.charges()
    response = hostile_service.query(fill(sql, hostile_service))
    hostile_service.assert_refused(response, code, 400, subject=subject)
    assert hostile_service.charges() == before


PREVIEWED = [
    "read_csv",
    "attach_file",
    "set_external_access",
    "query_table",
    "summarize",
    "case_division",
    "unit_equals",
]


@pytest.mark.parametrize(
    ("sql", "code", "subject"),
    [p for p in HOSTILE_CASES if p.id in PREVIEWED],
)
def test_preview_refuses_the_same_way(
    hostile_service: HostileService, sql: str, code: str, subject: str | None
) -> None:
    before = hostile_service.charges()
    response = hostile_service.query(fill(sql, hostile_service), path="/v1/queries/preview")
    hostile_service.assert_refused(response, code, 400, subject=subject)
    assert hostile_service.charges() == before


def test_refusals_do_not_depend_on_the_dataset_named(hostile_service: HostileService) -> None:
    """Naming another dataset, or none that exists, changes nothing: same rules, no charge."""
    before = hostile_service.charges()
    response = hostile_service.query("SELECT count(*) FROM tax", dataset="cps1988")
    hostile_service.assert_refused(response, "unknown_table", subject="tax")
    for dataset in ("../enterprise", "enterprise; DROP TABLE tax", "nope"):
        response = hostile_service.query("SELECT count(*) FROM tax", dataset=dataset)
        hostile_service.assert_refused(response, "not_found", 404)
    assert hostile_service.charges() == before


def test_service_is_up_after_the_refusals(hostile_service: HostileService) -> None:
    hostile_service.assert_up()
