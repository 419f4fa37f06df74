"""Times pairs of queries side by side with DuckDB against the local stack (benchmarks only).

  query_times.py [--runs N] LABEL SQL_A SQL_B [LABEL SQL_A SQL_B ...]

Connects once (duckdb_sql.connect: the stack's catalog attached), runs each pair once to warm the
connection, then N rounds of A, B in alternation, so load on the shared box hits both alike. Prints
the median, min and max wall time of each, the ratio of medians, and checks that A and B answer
the same rows (they are meant to ask the same question two ways).
"""

import statistics
import sys
import time

from duckdb_sql import connect


def main(argv):
    runs = 5
    if argv[:1] == ["--runs"]:
        runs, argv = int(argv[1]), argv[2:]
    if not argv or len(argv) % 3:
        sys.exit("usage: query_times.py [--runs N] LABEL SQL_A SQL_B [...]")
    con = connect(attach=True)
    for i in range(0, len(argv), 3):
        label, a, b = argv[i:i + 3]
        answers = [con.execute(q).fetchall() for q in (a, b)]
        # The map holds text, the column numbers: compare as text.
        as_text = [sorted([str(v) for v in row] for row in rows) for rows in answers]
        if as_text[0] != as_text[1]:
            sys.exit(f"{label}: the two queries disagree: {answers[0][:5]} vs {answers[1][:5]}")
        times = {a: [], b: []}
        for _ in range(runs):
            for q in (a, b):
                t = time.perf_counter()
                con.execute(q).fetchall()
                times[q].append(time.perf_counter() - t)
        ma, mb = statistics.median(times[a]), statistics.median(times[b])
        print(f"{label}: map median {ma * 1000:.0f} ms (min {min(times[a]) * 1000:.0f}, max {max(times[a]) * 1000:.0f}); "
              f"column median {mb * 1000:.0f} ms (min {min(times[b]) * 1000:.0f}, max {max(times[b]) * 1000:.0f}); "
              f"map/column {ma / mb:.1f}x; answer {answers[1][:4]}")


if __name__ == "__main__":
    main(sys.argv[1:])
