/* Thread pool and allocator of the tinygpt module.
 *
 * Workers are host threads, each with its own wasmtime Store and Instance of this
 * module over the one shared memory, and its own stack (the host sets each
 * instance's exported __stack_pointer to a stack taken from tg_alloc). Each worker
 * calls worker_loop(tid) once; it parks there between parallel regions: it spins a
 * while on the region counter, then sleeps in memory.atomic.wait32 until the caller
 * bumps the counter and notifies. Everything shared lives in linear memory (C
 * statics), never in wasm globals, which are per instance.
 */
#include "base.h"

#ifndef SPIN_ITERS /* a variant build may set it: wasm/build.py --define SPIN_ITERS=N --out DIR */
#define SPIN_ITERS 20000 /* atomic loads before sleeping (tens of microseconds) */
#endif
#define LD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)

static struct {
    int gen; /* bumped once per parallel region (and for stop) */
    int pad0[15];
    int pending; /* workers still running the current region */
    int pad1[15];
    int sleepers;      /* workers asleep in wait32 on gen */
    int main_sleeping; /* the caller is asleep in wait32 on pending */
    int stop;          /* workers return from worker_loop */
    int abort;         /* set by the host when a worker died: the caller traps */
    int nthreads;      /* threads taking part in regions, caller included */
    int started;       /* workers that entered worker_loop */
    int in_region;     /* the caller is inside a parallel region */
    task_fn fn;
    void *ctx;
} pool __attribute__((aligned(64))) = {.nthreads = 0};

int pool_threads(void) { return pool.nthreads; }


static float *scratch[MAX_THREADS];
float *thread_scratch(int tid) { return scratch[tid]; }

/* nth threads take part in regions from now on (the host must have started nth - 1
 * workers); allocates each thread's scratch. 0: ok, -1: no memory for the scratch. */
EXPORT(pool_set_threads) int pool_set_threads(int nth) {
    nth = nth < 1 ? 1 : nth > MAX_THREADS ? MAX_THREADS : nth;
    for (int t = 0; t < nth; t++)
        if (!scratch[t] && !(scratch[t] = tg_alloc(THREAD_SCRATCH_FLOATS * sizeof(float)))) return -1;
    pool.nthreads = nth;
    return 0;
}
EXPORT(pool_max_threads) int pool_max_threads(void) { return MAX_THREADS; }
EXPORT(pool_started) int pool_started(void) { return LD(&pool.started); }
EXPORT(pool_abort_addr) size_t pool_abort_addr(void) { return (size_t)&pool.abort; }

EXPORT(worker_loop) int worker_loop(int tid) {
    int seen = LD(&pool.gen);
    ADD(&pool.started, 1);
    for (;;) {
        int g, spins = 0;
        while ((g = LD(&pool.gen)) == seen) {
            if (++spins < SPIN_ITERS) continue;
            ADD(&pool.sleepers, 1);
            __builtin_wasm_memory_atomic_wait32(&pool.gen, seen, -1);
            ADD(&pool.sleepers, -1);
        }
        seen = g;
        if (LD(&pool.stop)) {
            ADD(&pool.started, -1);
            return 0;
        }
        pool.fn(pool.ctx, tid, pool.nthreads);
        if (ADD(&pool.pending, -1) == 1 && LD(&pool.main_sleeping))
            __builtin_wasm_memory_atomic_notify(&pool.pending, 1);
    }
}

/* wake every worker and make it return from worker_loop */
EXPORT(pool_stop) void pool_stop(void) {
    ST(&pool.stop, 1);
    ADD(&pool.gen, 1);
    __builtin_wasm_memory_atomic_notify(&pool.gen, -1);
}

__attribute__((import_module("env"), import_name("clock_ns"))) long long clock_ns(void);
int prof_tag;
static int prof_on;
static long long prof_ns[P_NTAGS], prof_calls[P_NTAGS];
EXPORT(prof_enable) void prof_enable(int on) { prof_on = on; }
EXPORT(prof_reset) void prof_reset(void) {
    for (int i = 0; i < P_NTAGS; i++) prof_ns[i] = prof_calls[i] = 0;
}
EXPORT(prof_ntags) int prof_ntags(void) { return P_NTAGS; }
EXPORT(prof_ns_addr) size_t prof_ns_addr(void) { return (size_t)prof_ns; }
EXPORT(prof_calls_addr) size_t prof_calls_addr(void) { return (size_t)prof_calls; }

static void run_region(task_fn fn, void *ctx);
void parallel_for(task_fn fn, void *ctx) {
    if (!prof_on) {
        run_region(fn, ctx);
    } else {
        int tag = prof_tag;
        long long t0 = clock_ns();
        run_region(fn, ctx);
        prof_ns[tag] += clock_ns() - t0;
        prof_calls[tag]++;
    }
}

static void run_region(task_fn fn, void *ctx) {
    int nth = pool.nthreads;
    if (nth < 1) __builtin_trap(); /* pool_set_threads was never called */
    if (nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    ST(&pool.pending, nth - 1);
    ST(&pool.in_region, 1);
    ADD(&pool.gen, 1);
    if (LD(&pool.sleepers)) __builtin_wasm_memory_atomic_notify(&pool.gen, -1);
    fn(ctx, 0, nth);
    int p, spins = 0;
    while ((p = LD(&pool.pending)) != 0) {
        if (++spins < SPIN_ITERS) continue;
        ST(&pool.main_sleeping, 1);
        if (LD(&pool.pending) != 0) __builtin_wasm_memory_atomic_wait32(&pool.pending, p, 100000000LL);
        ST(&pool.main_sleeping, 0);
        if (LD(&pool.abort)) __builtin_trap(); /* a worker died: never hang */
    }
    ST(&pool.in_region, 0);
}

/* ---- allocator -------------------------------------------------------------------- */
extern unsigned char __heap_base;
static size_t heap_top;
size_t tg_last_request;
static size_t mem_limit; /* bytes the memory may grow to (host's --max-memory); 0: the module's max */

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* Every growth of the memory is logged here (the host reads it: diagnose's memory
 * events): from and to in bytes, the workers inside worker_loop at the time and
 * whether a parallel region was running. The first GROW_LOG_CAP are kept; count goes on. */
#define GROW_LOG_CAP 64
static struct { u64 from, to, workers, in_region; } grow_log[GROW_LOG_CAP];
static int grow_count;
EXPORT(grow_log_addr) size_t grow_log_addr(void) { return (size_t)grow_log; }
EXPORT(grow_log_count) int grow_log_count(void) { return LD(&grow_count); }
EXPORT(grow_log_cap) int grow_log_cap(void) { return GROW_LOG_CAP; }
EXPORT(memory_set_limit) void memory_set_limit(size_t bytes) { mem_limit = bytes; }
EXPORT(memory_limit) size_t memory_limit(void) { return mem_limit; }

/* memory.grow by `pages`, refused past mem_limit; logged. Old size in pages or -1. */
static long long tg_grow(size_t pages) {
    size_t have = __builtin_wasm_memory_size(0);
    if (mem_limit && (have + pages) << 16 > mem_limit) return -1;
    size_t old = __builtin_wasm_memory_grow(0, pages);
    if (old == (size_t)-1) return -1;
    int i = ADD(&grow_count, 1);
    if (i < GROW_LOG_CAP) {
        grow_log[i].from = (u64)old << 16;
        grow_log[i].to = (u64)(old + pages) << 16;
        grow_log[i].workers = (u64)LD(&pool.started);
        grow_log[i].in_region = (u64)LD(&pool.in_region);
    }
    return (long long)old;
}

void *tg_alloc(size_t bytes) {
    if (!heap_top) heap_top = align64((size_t)&__heap_base);
    size_t p = align64(heap_top), end = p + bytes;
    size_t have = __builtin_wasm_memory_size(0) << 16;
    if (end > have) {
        size_t pages = (end - have + 65535) >> 16;
        if (tg_grow(pages) < 0) {
            tg_last_request = bytes;
            return 0;
        }
    }
    heap_top = end;
    return (void *)p;
}

/* grow once so that `bytes` more can be allocated without growing again: a plan's
 * blocks then cost one growth (one event), not one per block. 0: ok, -1: refused. */
int tg_reserve(size_t bytes) {
    if (!heap_top) heap_top = align64((size_t)&__heap_base);
    size_t end = align64(heap_top) + bytes, have = __builtin_wasm_memory_size(0) << 16;
    if (end <= have) return 0;
    if (tg_grow((end - have + 65535) >> 16) < 0) {
        tg_last_request = bytes;
        return -1;
    }
    return 0;
}

EXPORT(alloc) size_t alloc_export(size_t bytes) { return (size_t)tg_alloc(bytes); }
EXPORT(heap_top) size_t heap_top_export(void) {
    if (!heap_top) heap_top = align64((size_t)&__heap_base);
    return heap_top;
}
/* free everything allocated after `mark` (a heap_top value); memory never shrinks */
EXPORT(heap_reset) void heap_reset(size_t mark) { heap_top = mark; }
EXPORT(last_request) size_t last_request(void) { return tg_last_request; }
EXPORT(memory_bytes) size_t memory_bytes(void) { return __builtin_wasm_memory_size(0) << 16; }

/* ---- self test: memory growth from inside a parallel region ------------------------
 * thread 0 grows memory by `pages` while the other threads wait for it, then every
 * thread writes its id + 1 into the last words of the memory as its own memory.size
 * shows it right after: the host reads where each wrote to learn each thread's view
 * (V8 may show another thread the old size for a while; nothing else in this module
 * asks memory.size on a thread that did not grow). Returns the new size in pages, or -1
 * if the grow failed. */
static struct { size_t pages; long long result; int grown; } gt;
#ifdef SELFTEST_STALE_VIEW
static size_t stale_pages;
#endif
static void grow_task(void *ctx, int tid, int nth) {
    (void)ctx;
    if (tid == 0) {
        gt.result = tg_grow(gt.pages);
        ST(&gt.grown, 1);
    } else {
        while (!LD(&gt.grown)) {}
    }
    if (gt.result < 0) return;
    size_t end = __builtin_wasm_memory_size(0) << 16;
#ifdef SELFTEST_STALE_VIEW /* a variant for tests of the host's probe: the other threads take the size
                              from before the growth, as a thread whose view is stale would */
    if (tid) end = stale_pages << 16;
#endif
    ((volatile int *)end)[-1 - tid] = tid + 1;
}
EXPORT(grow_in_region) long long grow_in_region(size_t pages) {
    gt.pages = pages;
    gt.grown = 0;
#ifdef SELFTEST_STALE_VIEW
    stale_pages = __builtin_wasm_memory_size(0);
#endif
    parallel_for(grow_task, 0);
    return gt.result < 0 ? -1 : (long long)(__builtin_wasm_memory_size(0));
}

/* ---- self test: a trap inside a parallel region on thread `tid` (the host must raise a
 * clear error and not hang, whichever thread trapped) ----------------------------------- */
static void trap_task(void *ctx, int tid, int nth) {
    (void)nth;
    if (tid == *(int *)ctx) __builtin_trap();
}
EXPORT(trap_in_region) void trap_in_region(int tid) { parallel_for(trap_task, &tid); }
