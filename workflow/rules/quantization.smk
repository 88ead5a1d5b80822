# One quantized checkpoint per model × method × bit width; the method entry decides the
# starting model (rotated or not), the calibration set and the algorithm with its options.
# Each checkpoint is validated as it is written (every linear and expert quantized, codes,
# scales, Hub names, stock transformers loading): one that fails is not kept.


rule quantize:
    input:
        lambda wc: PLAN.inputs.quantize(wc.model, wc.method),
    output:
        directory(PLAN.paths.quant_dir("{model}", "{method}", "{bits}")),
    params:
        model=lambda wc: PLAN.inputs.quantize_source(wc.model, wc.method),
        args=lambda wc: PLAN.args.quantize(wc.model, wc.method, wc.bits),
        code=CODE["quantize"],
    log:
        PLAN.paths.log("{model}", "quantize", "{method}-w{bits}"),
    benchmark:
        PLAN.paths.benchmark("{model}", "quantize", "{method}-w{bits}")
    threads: PLAN.resources.stage("quantize", "threads")
    resources:
        mem_mb=PLAN.resources.stage("quantize", "mem_mb"),
        runtime=PLAN.resources.stage("quantize", "runtime"),
        gpu=PLAN.resources.stage("quantize", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant quantize --model {params.model} {params.args} --out {output} > {log} 2>&1 && "
        "moequant validate {output} >> {log} 2>&1"
