# The rotated fp model (QuaRot-style Hadamard on the residual stream), one per model.


rule rotate:
    input:
        lambda wc: base_model_inputs(wc.model),
    output:
        directory(rotated_dir("{model}")),
    params:
        model=lambda wc: base_model(wc.model),
        args=lambda wc: rotate_args(wc.model),
        code=CODE["rotate"],
    log:
        log_path("{model}", "rotate"),
    benchmark:
        bench_path("{model}", "rotate")
    threads: stage("rotate", "threads")
    resources:
        mem_mb=stage("rotate", "mem_mb"),
        runtime=stage("rotate", "runtime"),
        gpu=stage("rotate", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant rotate --model {params.model} {params.args} --out {output} > {log} 2>&1"
