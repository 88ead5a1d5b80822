"""Write the table layout the workflow's config describes, for `moequant tables --spec`."""

from moequant.artifacts import write_json

snakemake = globals()["snakemake"]
write_json(snakemake.output[0], snakemake.params.spec)
with open(snakemake.log[0], "w") as log:
    log.write(f"wrote {snakemake.output[0]}\n")
