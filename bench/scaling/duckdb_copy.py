"""DuckDB: read_csv, drop rows with NA, keep binary labels, a row number as the offset, and
COPY ... TO ... (PARTITION_BY) into 16 CSV shards by hash of it."""
import sys
import duckdb

def main(inp, out, nshards):
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET preserve_insertion_order = false")
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_csv('{inp}', nullstr=['NA', ''])").fetchall()]
    feats = [c for c in cols if c not in ("employed", "blackfemale", "targetted")]
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in cols)
    con.execute(f"""
        COPY (
          SELECT "offset", employed, {', '.join(feats)}, hash("offset") % {nshards} AS _shard FROM (
            SELECT row_number() OVER () AS "offset", * FROM read_csv('{inp}', nullstr=['NA', ''])
          ) WHERE {not_null} AND employed IN (0, 1)
        ) TO '{out}' (FORMAT csv, PARTITION_BY (_shard), OVERWRITE_OR_IGNORE)""")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
