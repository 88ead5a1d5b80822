# Perplexity (with KL divergence and top-1 agreement to the fp model) on every configured
# dataset in one job, and the lm-eval tasks, for every model × method × bit width a table reads.
# A variant that a task table shows gets both from one `evaluate` job (one model load instead
# of two); eval_ppl and eval_tasks serve every other variant and any file asked for by name.

ruleorder: evaluate > eval_ppl
ruleorder: evaluate > eval_tasks


rule evaluate:
    input:
        evaluate_inputs,
    output:
        [os.path.join(RESULTS, "{evaluated}", f"ppl-{dataset}.json") for dataset in DATASETS],
        os.path.join(RESULTS, "{evaluated}", "tasks.json"),
    wildcard_constraints:
        evaluated=_alternatives(EVALUATED_WITH_TASKS),
    params:
        model=lambda wc: model_under_test(*evaluated(wc)),
        args=evaluate_args,
        code=CODE["evaluate"],
    log:
        log_path("{evaluated}", "evaluate"),
    benchmark:
        bench_path("{evaluated}", "evaluate")
    threads: evaluate_resource("threads")
    resources:
        mem_mb=evaluate_resource("mem_mb"),
        runtime=evaluate_resource("runtime"),
        gpu=evaluate_resource("gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant evaluate --model {params.model} {params.args} > {log} 2>&1"


rule eval_ppl:
    input:
        eval_ppl_inputs,
    output:
        [ppl_file("{model}", "{method}", "{bits}", dataset) for dataset in DATASETS],
    params:
        model=lambda wc: model_under_test(wc.model, wc.method, wc.bits),
        args=lambda wc: eval_ppl_args(wc.model, wc.method),
        out=lambda wc: eval_ppl_out(wc.model, wc.method, wc.bits),
        code=CODE["eval_ppl"],
    log:
        log_path("{model}", "eval", "{method}-w{bits}", "ppl"),
    benchmark:
        bench_path("{model}", "eval", "{method}-w{bits}", "ppl")
    threads: stage("eval_ppl", "threads")
    resources:
        mem_mb=stage("eval_ppl", "mem_mb"),
        runtime=stage("eval_ppl", "runtime"),
        gpu=stage("eval_ppl", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant eval-ppl --model {params.model} {params.args} --out {params.out} > {log} 2>&1"


rule make_tasks:
    input:
        model_dir("{model}"),
    output:
        directory(tasks_dir("{model}")),
    params:
        docs=TASKS["docs"],
        code=CODE["make_tasks"],
    log:
        log_path("{model}", "make_tasks"),
    benchmark:
        bench_path("{model}", "make_tasks")
    threads: stage("make_tasks", "threads")
    resources:
        mem_mb=stage("make_tasks", "mem_mb"),
        runtime=stage("make_tasks", "runtime"),
        gpu=stage("make_tasks", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "moequant make-tasks --data {input}/data --docs {params.docs} --out {output} > {log} 2>&1"


rule eval_tasks:
    input:
        eval_tasks_inputs,
    output:
        tasks_file("{model}", "{method}", "{bits}"),
    params:
        model=lambda wc: model_under_test(wc.model, wc.method, wc.bits),
        args=lambda wc: eval_tasks_args(wc.model),
        code=CODE["eval_tasks"],
    log:
        log_path("{model}", "eval", "{method}-w{bits}", "tasks"),
    benchmark:
        bench_path("{model}", "eval", "{method}-w{bits}", "tasks")
    threads: stage("eval_tasks", "threads")
    resources:
        mem_mb=stage("eval_tasks", "mem_mb"),
        runtime=stage("eval_tasks", "runtime"),
        gpu=stage("eval_tasks", "gpu"),
    conda:
        CONDA_ENV
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "moequant eval-tasks --model {params.model} {params.args} --out {output} > {log} 2>&1"
