# Perplexity (with KL divergence and top-1 agreement to the fp model) on every configured
# dataset in one job, and the lm-eval tasks, for every model × method × bit width a table reads.
# A variant that a task table shows gets both from one `evaluate` job (one model load instead
# of two); eval_ppl and eval_tasks serve every other variant and any file asked for by name.

ruleorder: evaluate > eval_ppl
ruleorder: evaluate > eval_tasks


rule evaluate:
    input:
        lambda wc: PLAN.inputs.evaluate(*evaluated(wc)),
    output:
        [PLAN.paths.evaluated_ppl_file("{evaluated}", dataset) for dataset in PLAN.datasets],
        PLAN.paths.evaluated_tasks_file("{evaluated}"),
    wildcard_constraints:
        evaluated=alternatives(PLAN.targets.evaluated_with_tasks),
    params:
        model=lambda wc: PLAN.inputs.model_under_test(*evaluated(wc)),
        args=lambda wc: PLAN.args.evaluate(*evaluated(wc)),
        code=CODE["evaluate"],
    log:
        PLAN.paths.log("{evaluated}", "evaluate"),
    benchmark:
        PLAN.paths.benchmark("{evaluated}", "evaluate")
    threads: PLAN.resources.evaluate("threads")
    resources:
        mem_mb=PLAN.resources.evaluate("mem_mb"),
        runtime=PLAN.resources.evaluate("runtime"),
        gpu=lambda wc: PLAN.resources.gpus("evaluate", evaluated(wc)[0]),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant evaluate --model {params.model} {params.args} > {log} 2>&1"


rule eval_ppl:
    input:
        lambda wc: PLAN.inputs.eval_ppl(wc.model, wc.method, wc.bits),
    output:
        [PLAN.paths.ppl_file("{model}", "{method}", "{bits}", dataset) for dataset in PLAN.datasets],
    params:
        model=lambda wc: PLAN.inputs.model_under_test(wc.model, wc.method, wc.bits),
        args=lambda wc: PLAN.args.eval_ppl(wc.model, wc.method),
        out=lambda wc: PLAN.args.eval_ppl_out(wc.model, wc.method, wc.bits),
        code=CODE["eval_ppl"],
    log:
        PLAN.paths.log("{model}", "eval", "{method}-w{bits}", "ppl"),
    benchmark:
        PLAN.paths.benchmark("{model}", "eval", "{method}-w{bits}", "ppl")
    threads: PLAN.resources.stage("eval_ppl", "threads")
    resources:
        mem_mb=PLAN.resources.stage("eval_ppl", "mem_mb"),
        runtime=PLAN.resources.stage("eval_ppl", "runtime"),
        gpu=lambda wc: PLAN.resources.gpus("eval_ppl", wc.model),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant eval-ppl --model {params.model} {params.args} --out {params.out} > {log} 2>&1"


rule make_tasks:
    input:
        PLAN.paths.model_dir("{model}"),
    output:
        directory(PLAN.paths.tasks_dir("{model}")),
    params:
        docs=PLAN.tasks["docs"],
        code=CODE["make_tasks"],
    log:
        PLAN.paths.log("{model}", "make_tasks"),
    benchmark:
        PLAN.paths.benchmark("{model}", "make_tasks")
    threads: PLAN.resources.stage("make_tasks", "threads")
    resources:
        mem_mb=PLAN.resources.stage("make_tasks", "mem_mb"),
        runtime=PLAN.resources.stage("make_tasks", "runtime"),
        gpu=PLAN.resources.stage("make_tasks", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "moequant make-tasks --data {input}/data --docs {params.docs} --out {output} > {log} 2>&1"


rule eval_tasks:
    input:
        lambda wc: PLAN.inputs.eval_tasks(wc.model, wc.method, wc.bits),
    output:
        PLAN.paths.tasks_file("{model}", "{method}", "{bits}"),
    params:
        model=lambda wc: PLAN.inputs.model_under_test(wc.model, wc.method, wc.bits),
        args=lambda wc: PLAN.args.eval_tasks(wc.model),
        code=CODE["eval_tasks"],
    log:
        PLAN.paths.log("{model}", "eval", "{method}-w{bits}", "tasks"),
    benchmark:
        PLAN.paths.benchmark("{model}", "eval", "{method}-w{bits}", "tasks")
    threads: PLAN.resources.stage("eval_tasks", "threads")
    resources:
        mem_mb=PLAN.resources.stage("eval_tasks", "mem_mb"),
        runtime=PLAN.resources.stage("eval_tasks", "runtime"),
        gpu=lambda wc: PLAN.resources.gpus("eval_tasks", wc.model),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant eval-tasks --model {params.model} {params.args} --out {output} > {log} 2>&1"
