"""Polars' streaming engine: lazy scan, drop rows with NA, keep binary labels, a row index as the
offset, 16 CSV shards by hash of it (one sink, partitioned by key)."""
import sys
import polars as pl

def main(inp, out, nshards):
    lf = pl.scan_csv(inp, null_values=["NA", ""], infer_schema_length=10000, row_index_name="offset")
    feats = [c for c in lf.collect_schema().names() if c not in ("offset", "employed", "blackfemale", "targetted")]
    lf = (lf.drop_nulls()
            .filter(pl.col("employed").is_in([0, 1]))
            .select(["offset", "employed"] + feats)
            .with_columns((pl.col("offset").hash(1) % nshards).alias("_shard")))
    lf.sink_csv(pl.PartitionBy(out, key="_shard", include_key=False, approximate_bytes_per_file=None), engine="streaming", mkdir=True)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
