# The paper's tables (CSV + Markdown), plots, and the items of `snakemake --report`.


rule table_spec:
    output:
        f"{RESULTS}/tables/spec.json",
    params:
        spec=report_spec(),
    log:
        log_path("table_spec"),
    benchmark:
        bench_path("table_spec")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        CONDA_ENV
    script:
        "../scripts/write_spec.py"


rule tables:
    input:
        spec=f"{RESULTS}/tables/spec.json",
        evaluations=evaluation_files(),
        calibration=calibration_summaries(),
    output:
        [report_item(path) for path in table_outputs()],
    params:
        results=lambda wc, input: str(Path(input.spec).parents[1]),
        out=lambda wc, output: str(Path(output[0]).parent),
        code=CODE["tables"],
    log:
        log_path("tables"),
    benchmark:
        bench_path("tables")
    threads: stage("tables", "threads")
    resources:
        mem_mb=stage("tables", "mem_mb"),
        runtime=stage("tables", "runtime"),
        gpu=stage("tables", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "moequant tables --results {params.results} --spec {input.spec} --out {params.out} > {log} 2>&1"
