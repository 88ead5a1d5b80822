# The rotated fp model (QuaRot-style Hadamard on the residual stream), one per model.


rule rotate:
    input:
        lambda wc: PLAN.inputs.base_model_files(wc.model),
    output:
        directory(PLAN.paths.rotated_dir("{model}")),
    params:
        model=lambda wc: PLAN.inputs.base_model(wc.model),
        args=lambda wc: PLAN.args.rotate(wc.model),
        code=CODE["rotate"],
    log:
        PLAN.paths.log("{model}", "rotate"),
    benchmark:
        PLAN.paths.benchmark("{model}", "rotate")
    threads: PLAN.resources.stage("rotate", "threads")
    resources:
        mem_mb=PLAN.resources.stage("rotate", "mem_mb"),
        runtime=PLAN.resources.stage("rotate", "runtime"),
        gpu=PLAN.resources.stage("rotate", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant rotate --model {params.model} {params.args} --out {output} > {log} 2>&1"
