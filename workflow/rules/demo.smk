# The demo model: a small MoE trained on CPU with its tokenizer and held-out text per domain.


rule build_demo:
    output:
        directory(PLAN.paths.model_dir("{model}")),
    params:
        args=lambda wc: PLAN.args.demo(wc.model),
        code=CODE["demo"],
    log:
        PLAN.paths.log("{model}", "build_demo"),
    benchmark:
        PLAN.paths.benchmark("{model}", "build_demo")
    threads: PLAN.resources.stage("build_demo", "threads")
    resources:
        mem_mb=PLAN.resources.stage("build_demo", "mem_mb"),
        runtime=PLAN.resources.stage("build_demo", "runtime"),
        gpu=PLAN.resources.stage("build_demo", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant build-demo {params.args} --out {output} > {log} 2>&1"
