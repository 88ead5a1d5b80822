# The demo model: a small MoE trained on CPU with its tokenizer and held-out text per domain.


rule build_demo:
    output:
        directory(model_dir("{model}")),
    params:
        args=lambda wc: demo_args(wc.model),
        code=CODE["demo"],
    log:
        log_path("{model}", "build_demo"),
    benchmark:
        bench_path("{model}", "build_demo")
    threads: stage("build_demo", "threads")
    resources:
        mem_mb=stage("build_demo", "mem_mb"),
        runtime=stage("build_demo", "runtime"),
        gpu=stage("build_demo", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant build-demo {params.args} --out {output} > {log} 2>&1"
