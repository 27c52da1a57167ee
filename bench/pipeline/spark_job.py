"""PySpark local[2] baseline (the seed project's engine): the same cleaning, text output."""
import sys
from pyspark.sql import SparkSession, functions as F

def main(inp, out, nshards):
    spark = (SparkSession.builder.master("local[2]").appName("fastdp-bench")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.csv(inp, header=True, nullValue="NA")
    feats = [c for c in df.columns if c not in ("employed", "blackfemale", "targetted")]
    df = (df.na.drop().filter(F.col("employed").isin("0", "1"))
            .select(["employed"] + feats).repartition(nshards))
    df.write.mode("overwrite").csv(out, header=True)
    spark.stop()

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
