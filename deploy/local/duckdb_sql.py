"""Run SQL with DuckDB against the local telemetry-lake stack (S3 + Nessie Iceberg REST catalog).

Invoked by deploy/local/duckdb-sql with the venv's python and the stack's TLAKE_* environment.

  duckdb-sql [--csv] [--no-attach] ["SQL; SQL; ..." ...]     (no SQL argument, or "-": read stdin)

Extensions are loaded from the duckdb-extension-* PyPI packages by path (avro, httpfs, iceberg, in
that order); autoinstall/autoload are off, so DuckDB never touches the network for extensions.
Only statements that return rows are printed (SELECT/SHOW/DESCRIBE/EXPLAIN/PRAGMA/CALL, and
INSERT ... RETURNING); DDL and plain DML print nothing. With --csv each result is printed as CSV
with a header row (results separated by an empty line); NULL is an empty field.
"""

import csv
import importlib
import os
import pathlib
import sys

import duckdb

EXTENSIONS = ("avro", "httpfs", "iceberg")
QUIET_TYPES = {
    "CREATE", "DROP", "ALTER", "ATTACH", "DETACH", "LOAD", "SET", "VARIABLE_SET", "TRANSACTION",
    "CREATE_FUNC", "PREPARE", "VACUUM", "EXTENSION", "COPY_DATABASE", "EXPORT",
}
DML_TYPES = {"INSERT", "UPDATE", "DELETE", "MERGE_INTO", "COPY"}


def die(msg, code=1):
    print(f"duckdb-sql: error: {msg}", file=sys.stderr)
    sys.exit(code)


def env(name, default=None):
    v = os.environ.get(name, default)
    if v is None:
        die(f"{name} is not set (run via deploy/local/duckdb-sql, or eval \"$(deploy/local/stack env)\")")
    return v


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def extension_path(name):
    mod = importlib.import_module(f"duckdb_extension_{name}")
    path = pathlib.Path(mod.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        die(f"extension file not found: {path}")
    return path


def connect(attach):
    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    })
    for name in EXTENSIONS:
        con.execute(f"LOAD {sql_str(str(extension_path(name)))}")
    if not attach:
        return con
    endpoint = env("TLAKE_S3_ENDPOINT", "http://127.0.0.1:9000")
    use_ssl = endpoint.startswith("https://")
    host = endpoint.split("://", 1)[-1].rstrip("/")
    con.execute(
        "CREATE SECRET tlake_s3 (TYPE S3, KEY_ID {k}, SECRET {s}, REGION {r}, ENDPOINT {e}, "
        "USE_SSL {ssl}, URL_STYLE 'path')".format(
            k=sql_str(env("TLAKE_S3_ACCESS_KEY")), s=sql_str(env("TLAKE_S3_SECRET_KEY")),
            r=sql_str(env("TLAKE_S3_REGION", "us-east-1")), e=sql_str(host),
            ssl="true" if use_ssl else "false"))
    # ACCESS_DELEGATION_MODE 'none': use the S3 secret above instead of building one from the
    # table config Nessie returns (which has endpoint/region but no keys -> anonymous -> 403 on a
    # private bucket). DEFAULT_SCHEMA 'main': DuckDB 1.5 maps the schema name "main" to the
    # catalog's default schema, which is empty unless set, so telemetrylake.main.* would fail.
    warehouse = env("TLAKE_WAREHOUSE", "telemetrylake")
    con.execute(
        "ATTACH {w} AS {a} (TYPE ICEBERG, ENDPOINT {u}, AUTHORIZATION_TYPE 'NONE', "
        "ACCESS_DELEGATION_MODE 'none', DEFAULT_SCHEMA 'main')".format(
            w=sql_str(warehouse), a='"' + warehouse.replace('"', '""') + '"',
            u=sql_str(env("TLAKE_CATALOG_URI", "http://127.0.0.1:19120/iceberg/"))))
    return con


def fmt(v, csv_mode):
    if v is None:
        return "" if csv_mode else "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def print_table(names, types, rows, out):
    cells = [[fmt(v, False) for v in r] for r in rows]
    widths = [max([len(n), len(t)] + [len(r[i]) for r in cells]) for i, (n, t) in enumerate(zip(names, types))]
    line = lambda l, m, r: l + m.join("─" * (w + 2) for w in widths) + r
    row = lambda vals: "│" + "│".join(f" {v:<{w}} " for v, w in zip(vals, widths)) + "│"
    out.write(line("┌", "┬", "┐") + "\n")
    out.write(row(names) + "\n")
    out.write(row(types) + "\n")
    out.write(line("├", "┼", "┤") + "\n")
    for r in cells:
        out.write(row(r) + "\n")
    out.write(line("└", "┴", "┘") + "\n")
    out.write(f"{len(rows)} row{'s' if len(rows) != 1 else ''}\n")


def main(argv):
    csv_mode, attach, sql_parts = False, True, []
    for a in argv:
        if a == "--csv":
            csv_mode = True
        elif a == "--no-attach":
            attach = False
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            sql_parts.append(a)
    if not sql_parts or sql_parts == ["-"]:
        sql_parts = [sys.stdin.read()]
    sql = ";\n".join(sql_parts)

    try:
        con = connect(attach)
    except duckdb.Error as e:
        die(f"setup failed (is the stack up? deploy/local/stack status): {e}")

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        die(str(e))
    if not statements:
        die("no SQL given")

    out = sys.stdout
    printed = 0
    writer = csv.writer(out, lineterminator="\n")
    for stmt in statements:
        try:
            con.execute(stmt)
        except duckdb.Error as e:
            die(f"{e}\n  in statement: {stmt.query.strip()[:500]}")
        kind = stmt.type.name
        if kind in QUIET_TYPES or con.description is None:
            continue
        names = [d[0] for d in con.description]
        if kind in DML_TYPES and names == ["Count"]:
            continue
        types = [str(d[1]) for d in con.description]
        rows = con.fetchall()
        if csv_mode:
            if printed:
                out.write("\n")
            writer.writerow(names)
            for r in rows:
                writer.writerow([fmt(v, True) for v in r])
        else:
            print_table(names, types, rows, out)
        printed += 1
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
