# The paper's tables (CSV + Markdown), plots, and the items of `snakemake --report`.


rule table_spec:
    output:
        PLAN.paths.spec_file(),
    params:
        spec=PLAN.targets.report_spec(),
    log:
        PLAN.paths.log("table_spec"),
    benchmark:
        PLAN.paths.benchmark("table_spec")
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
        spec=PLAN.paths.spec_file(),
        evaluations=PLAN.targets.evaluation_files(),
        calibration=PLAN.targets.calibration_summaries(),
    output:
        [report_item(path) for path in PLAN.targets.table_outputs()],
    params:
        results=lambda wc, input: str(Path(input.spec).parents[1]),
        out=lambda wc, output: str(Path(output[0]).parent),
        code=CODE["tables"],
    log:
        PLAN.paths.log("tables"),
    benchmark:
        PLAN.paths.benchmark("tables")
    threads: PLAN.resources.stage("tables", "threads")
    resources:
        mem_mb=PLAN.resources.stage("tables", "mem_mb"),
        runtime=PLAN.resources.stage("tables", "runtime"),
        gpu=PLAN.resources.stage("tables", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "moequant tables --results {params.results} --spec {input.spec} --out {params.out} > {log} 2>&1"
