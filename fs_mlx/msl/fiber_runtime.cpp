// fiber_runtime.cpp — runs a kernel's Metal threads as fibers.
//
// Compiled once into a cached shared object. A launch walks the grid one
// threadgroup at a time. Inside a threadgroup every Metal thread is a fiber
// with its own stack, and each runs until it finishes or blocks at a
// threadgroup_barrier or a SIMD-group operation. SIMD groups advance one at
// a time, not in lock step: a step picks one SIMD group (in the chosen order)
// and
//   * if its lanes were released by a barrier, runs them (in the order);
//   * else, its lanes all being blocked, resolves its lanes waiting at the
//     textually-first call site together (operands combined, results written
//     back) — the "active" lanes of that operation — and runs them on, up to
//     their next SIMD operation or barrier.
// forward always picks the lowest SIMD group that can advance (so group 0
// runs all the way to its next barrier before group 1 starts), reverse the
// highest, random a random one. When no group can advance, every live thread
// is at a barrier, and all are released. Exited threads count as arrived at
// barriers and are inactive in SIMD ops.
//
// Faults (out-of-bounds, stack overflow, division by zero), hangs caught by
// the watchdog and errors raised by the kernel all land in one siglongjmp
// back to msl_run, which returns a message instead of killing Python.
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "msl_abi.h"

#if !defined(MSL_FIBER_UCONTEXT) && !(defined(__x86_64__) || defined(__aarch64__))
#define MSL_FIBER_UCONTEXT 1
#endif
#ifdef MSL_FIBER_UCONTEXT
#include <ucontext.h>
#endif

#define MSL_EXPORT extern "C" __attribute__((visibility("default")))

enum { ST_READY = 0, ST_BLOCKED = 1, ST_DONE = 2 };
static const unsigned MSL_MAX_TG = 1024;       // Metal's maxTotalThreadsPerThreadgroup
static const unsigned long MSL_TG_LIMIT = 32768;  // Metal's threadgroup memory limit

// ---------------------------------------------------------------- context switch
// msl_switch(save, to): saves callee-saved registers on the current stack,
// stores the stack pointer in *save, and resumes the fiber whose stack
// pointer is `to`. Hand-written because swapcontext makes a syscall
// (sigprocmask) per switch, about 8x slower. The floating-point control
// registers (MXCSR, FPCR) are not switched: all fibers share the
// scheduler's rounding mode, and kernels cannot change it.
extern "C" void msl_switch(void** save, void* to);
extern "C" void msl_fiber_trampoline();
extern "C" void msl_fiber_main(msl_thread* t);

#if defined(__APPLE__)
#define MSL_SYM(name) "_" #name
#else
#define MSL_SYM(name) #name
#endif

// Stacks are a power of two apart, so without an offset every fiber's top
// frame would land in the same cache set and each switch would miss. Start
// fiber i's stack (i mod 128) cache lines lower ("cache colouring").
static inline unsigned long stack_color(const msl_thread* t) {
  return (unsigned long)(t->thread_index_in_threadgroup % 128) * 64;
}

#if !defined(MSL_FIBER_UCONTEXT) && defined(__x86_64__)
asm(".text\n"
    ".globl " MSL_SYM(msl_switch) "\n"
    MSL_SYM(msl_switch) ":\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".globl " MSL_SYM(msl_fiber_trampoline) "\n"
    MSL_SYM(msl_fiber_trampoline) ":\n"
    "  movq %r12, %rdi\n"
    "  call " MSL_SYM(msl_fiber_main) "\n"
    "  ud2\n");

// Lay out a fresh stack so that msl_switch "returns" into the trampoline
// with the thread pointer in r12 and a 16-byte aligned stack at the call.
static void* fiber_prepare(char* lo, unsigned long size, msl_thread* t) {
  unsigned long top = ((unsigned long)(lo + size - stack_color(t))) & ~15UL;
  unsigned long* sp = (unsigned long*)(top - 8);
  *sp = (unsigned long)&msl_fiber_trampoline;   // return address; after `ret`
  *--sp = 0;                                      // rbp   rsp = top, 16-aligned
  *--sp = 0;                                      // rbx
  *--sp = (unsigned long)t;                       // r12
  *--sp = 0; *--sp = 0; *--sp = 0;                // r13 r14 r15
  return sp;
}
#elif !defined(MSL_FIBER_UCONTEXT) && defined(__aarch64__)
asm(".text\n"
    ".globl " MSL_SYM(msl_switch) "\n"
    ".p2align 2\n"
    MSL_SYM(msl_switch) ":\n"
    "  sub sp, sp, #176\n"
    "  stp x19, x20, [sp, #0]\n  stp x21, x22, [sp, #16]\n  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n  stp x27, x28, [sp, #64]\n  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n  stp d10, d11, [sp, #112]\n  stp d12, d13, [sp, #128]\n"
    "  stp d14, d15, [sp, #144]\n"
    "  mov x2, sp\n  str x2, [x0]\n  mov sp, x1\n"
    "  ldp x19, x20, [sp, #0]\n  ldp x21, x22, [sp, #16]\n  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n  ldp x27, x28, [sp, #64]\n  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n  ldp d10, d11, [sp, #112]\n  ldp d12, d13, [sp, #128]\n"
    "  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #176\n  ret\n"
    ".globl " MSL_SYM(msl_fiber_trampoline) "\n"
    ".p2align 2\n"
    MSL_SYM(msl_fiber_trampoline) ":\n"
    "  mov x0, x19\n  bl " MSL_SYM(msl_fiber_main) "\n  brk #0\n");

static void* fiber_prepare(char* lo, unsigned long size, msl_thread* t) {
  unsigned long top = ((unsigned long)(lo + size - stack_color(t))) & ~15UL;
  unsigned long* sp = (unsigned long*)(top - 176);
  memset(sp, 0, 176);
  sp[0] = (unsigned long)t;                                // x19
  sp[11] = (unsigned long)&msl_fiber_trampoline;           // x30
  return sp;
}
#else
// Portable fallback: ucontext (slower: a syscall per switch).
static ucontext_t g_sched_uctx;
static void fiber_uc_start(unsigned hi, unsigned lo) {
  msl_fiber_main((msl_thread*)(((unsigned long)hi << 32) | lo));
}
#endif

// ---------------------------------------------------------------- launch state
struct group_state {
  msl_thread* threads;        // n threads of this threadgroup
  unsigned n;
  unsigned alive;
  unsigned perm[MSL_MAX_TG];  // resume order without fibers (plain calls)
  unsigned lanes[MSL_MAX_TG]; // SIMD group s's lanes in resume order: lanes[32s .. 32s+31]
  unsigned ready_mask;        // SIMD groups whose lanes a barrier released, not yet run
  unsigned simd_mask;         // SIMD groups with lanes blocked at a SIMD operation
  unsigned long tg_used;
  unsigned nsites;
  unsigned site_ids[256];
  unsigned long site_off[256];
};

static msl_api g_api;
static const msl_launch* g_launch;
static group_state g_group;
static msl_thread g_threads[MSL_MAX_TG];
static void* g_sched_sp;
static sigjmp_buf g_jmp;
static volatile sig_atomic_t g_in_launch;
static volatile sig_atomic_t g_timed_out;
static char g_altstack[1 << 16];

static void describe_site(char* buf, unsigned long cap, unsigned site) {
  unsigned line = (site >> 10) & 0x1fffff, col = site & 0x3ff;
  snprintf(buf, cap, "line %u col %u of the kernel %s", line, col,
           (site >> 31) ? "body" : "header");
}

static void describe_thread(char* buf, unsigned long cap, const msl_thread* t) {
  if (!t) { snprintf(buf, cap, "the scheduler"); return; }
  snprintf(buf, cap, "thread_position_in_grid (%u, %u, %u)", t->thread_position_in_grid[0],
           t->thread_position_in_grid[1], t->thread_position_in_grid[2]);
}

// Leave the launch with an error; works from a fiber or a signal handler.
[[noreturn]] static void bail(int code) { siglongjmp(g_jmp, code); }

static void fail_msg(msl_thread* t, const char* msg) {
  char who[96];
  describe_thread(who, sizeof who, t);
  snprintf(g_launch->err, g_launch->err_cap, "%s (in %s)", msg, who);
  bail(3);
}

// ---------------------------------------------------------------- fibers
// A step resumes the runnable lanes of one SIMD group in the order's sequence
// (g_run). A thread that stops hands over directly to the next runnable one
// after it in that sequence (one switch instead of two through the
// scheduler); the last one returns to the scheduler.
static const unsigned* g_run;  // the lanes of the step, as thread indices
static unsigned g_run_n;
static unsigned g_cursor;      // position in g_run of the running thread

static inline void switch_to_scheduler(msl_thread* t) {
#ifdef MSL_FIBER_UCONTEXT
  swapcontext((ucontext_t*)t->uctx, &g_sched_uctx);
#else
  group_state& g = g_group;
  for (unsigned k = g_cursor + 1; k < g_run_n; k++) {
    msl_thread* nx = &g.threads[g_run[k]];
    if (nx->state == ST_READY) {
      g_cursor = k;
      g_api.current = nx;
      msl_switch(&t->sp, nx->sp);
      return;
    }
  }
  msl_switch(&t->sp, g_sched_sp);
#endif
}

extern "C" void msl_fiber_main(msl_thread* t) {
  g_launch->entry(g_launch->buffers, t);
  t->state = ST_DONE;
  t->kind = MSL_WAIT_NONE;
  g_group.alive--;
  switch_to_scheduler(t);
  __builtin_trap();  // a finished fiber is never resumed
}

static void api_block(msl_thread* t) {
  if (g_launch->direct)
    fail_msg(t, "internal error: a barrier or SIMD-group function was called in a kernel "
                "whose source names none (run without fibers); please report it");
  t->state = ST_BLOCKED;
  if (t->kind == MSL_WAIT_SIMD) g_group.simd_mask |= 1u << t->simdgroup_index_in_threadgroup;
  switch_to_scheduler(t);
}

static void* api_tg_alloc(msl_thread* t, unsigned site, unsigned long size, unsigned long align) {
  group_state& g = g_group;
  for (unsigned i = 0; i < g.nsites; i++)
    if (g.site_ids[i] == site) return g_launch->tg_mem + g.site_off[i];
  if (align < 16) align = 16;
  unsigned long off = (g.tg_used + align - 1) & ~(align - 1);
  if (off + size > MSL_TG_LIMIT || off + size > g_launch->tg_mem_size || g.nsites == 256) {
    char m[200];
    snprintf(m, sizeof m, "threadgroup memory exceeds Metal's limit of %lu bytes (asked for %lu more at %lu)",
             MSL_TG_LIMIT, size, off);
    fail_msg(t, m);
  }
  // Poison: all-ones bytes read as NaN for float/half/bfloat and -1 for ints,
  // so a read before any write shows up in the output.
  memset(g_launch->tg_mem + off, 0xff, size);
  g.site_ids[g.nsites] = site;
  g.site_off[g.nsites++] = off;
  g.tg_used = off + size;
  return g_launch->tg_mem + off;
}

static void api_fail(msl_thread* t, const char* msg) { fail_msg(t, msg); }

// ---------------------------------------------------------------- signals
static struct sigaction g_old[5];
static const int g_sigs[5] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGUSR2};
static stack_t g_old_alt;

static void on_signal(int sig, siginfo_t* info, void*) {
  if (!g_in_launch) return;
  const msl_launch* L = g_launch;
  msl_thread* t = g_api.current;
  char who[96];
  describe_thread(who, sizeof who, t);
  if (sig == SIGUSR2) {
    if (!g_timed_out) return;
    snprintf(L->err, L->err_cap,
             "watchdog: the kernel ran longer than %.3g s; last running: %s. Fibers are not "
             "preempted, so a thread spin-waiting for another thread's write never ends "
             "(set a larger watchdog if the kernel is just slow)", L->watchdog_s, who);
    bail(2);
  }
  if (sig == SIGFPE) {
    snprintf(L->err, L->err_cap, "arithmetic fault (integer division by zero?) in %s", who);
    bail(4);
  }
  unsigned long a = (unsigned long)info->si_addr;
  for (int i = 0; i < L->nranges; i++) {
    unsigned long lo = L->range_lo[i], hi = L->range_hi[i];
    if (a + 65536 >= lo && a < hi + 65536) {
      snprintf(L->err, L->err_cap, "@OOB %d %ld %lu %s", i, (long)(a - lo), hi - lo, who);
      bail(5);
    }
  }
  for (unsigned long i = 0; i < L->nstacks; i++) {
    char* lo = L->stacks + i * L->stack_size;
    if (a >= (unsigned long)lo && a < (unsigned long)lo + 4096) {
      snprintf(L->err, L->err_cap,
               "stack overflow in %s: each Metal thread has a %lu KiB stack (FSX_MSL_STACK_KB)",
               who, L->stack_size / 1024);
      bail(6);
    }
  }
  snprintf(L->err, L->err_cap, "%s at address 0x%lx in %s (a wild pointer?)",
           sig == SIGILL ? "illegal instruction" : "memory fault", a, who);
  bail(7);
}

static void install_signals() {
  stack_t ss;
  ss.ss_sp = g_altstack;
  ss.ss_size = sizeof g_altstack;
  ss.ss_flags = 0;
  sigaltstack(&ss, &g_old_alt);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 5; i++) sigaction(g_sigs[i], &sa, &g_old[i]);
}

static void restore_signals() {
  for (int i = 0; i < 5; i++) sigaction(g_sigs[i], &g_old[i], 0);
  sigaltstack(&g_old_alt, 0);
}

// The watchdog is one helper thread, started on first use, that sleeps until
// a launch is running and, past its deadline, interrupts the running fiber
// with SIGUSR2 (fibers are never preempted otherwise).
static pthread_mutex_t g_wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wd_cv = PTHREAD_COND_INITIALIZER;
static int g_wd_started;
static unsigned long g_wd_launch;    // id of the launch being watched, 0 = none
static struct timespec g_wd_deadline;
static pthread_t g_wd_target;

static void* watchdog_main(void*) {
  pthread_mutex_lock(&g_wd_mu);
  for (;;) {
    while (g_wd_launch == 0) pthread_cond_wait(&g_wd_cv, &g_wd_mu);
    unsigned long id = g_wd_launch;
    while (g_wd_launch == id) {
      if (pthread_cond_timedwait(&g_wd_cv, &g_wd_mu, &g_wd_deadline) != 0 && g_wd_launch == id) {
        g_timed_out = 1;
        pthread_kill(g_wd_target, SIGUSR2);
        while (g_wd_launch == id) pthread_cond_wait(&g_wd_cv, &g_wd_mu);
      }
    }
  }
  return 0;
}

static void watchdog_arm(double seconds) {
  static unsigned long next_id = 1;
  pthread_mutex_lock(&g_wd_mu);
  if (!g_wd_started) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&th, &attr, watchdog_main, 0);
    g_wd_started = 1;
  }
  clock_gettime(CLOCK_REALTIME, &g_wd_deadline);
  g_wd_deadline.tv_sec += (time_t)seconds;
  g_wd_deadline.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
  if (g_wd_deadline.tv_nsec >= 1000000000L) {
    g_wd_deadline.tv_sec++;
    g_wd_deadline.tv_nsec -= 1000000000L;
  }
  g_wd_target = pthread_self();
  g_wd_launch = next_id++;
  pthread_cond_signal(&g_wd_cv);
  pthread_mutex_unlock(&g_wd_mu);
}

static void watchdog_disarm() {
  pthread_mutex_lock(&g_wd_mu);
  g_wd_launch = 0;
  pthread_cond_signal(&g_wd_cv);
  pthread_mutex_unlock(&g_wd_mu);
}

// ---------------------------------------------------------------- scheduling
static unsigned long long g_rng;
static unsigned rand_below(unsigned n) {
  g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
  return (unsigned)(g_rng % n);
}

static void shuffle(unsigned* a, unsigned n) {
  for (unsigned i = n - 1; i > 0; i--) {
    unsigned j = rand_below(i + 1), tmp = a[i];
    a[i] = a[j];
    a[j] = tmp;
  }
}

static void make_order(group_state& g, int order) {
  for (unsigned i = 0; i < g.n; i++) g.perm[i] = order == 1 ? g.n - 1 - i : i;
  if (order == 2) shuffle(g.perm, g.n);
  // Lanes within a SIMD group: forward, reversed, or shuffled before each step
  for (unsigned i = 0; i < g.n; i++) {
    unsigned base = i & ~31u, end = base + 32 < g.n ? base + 32 : g.n;
    g.lanes[i] = order == 1 ? end - 1 - (i - base) : i;
  }
}

static inline void resume(msl_thread* t) {
  g_api.current = t;
#ifdef MSL_FIBER_UCONTEXT
  swapcontext(&g_sched_uctx, (ucontext_t*)t->uctx);
#else
  msl_switch(&g_sched_sp, t->sp);
#endif
  g_api.current = 0;
}

// Resolve one SIMD operation of SIMD group s, whose lanes are all blocked or
// done: the lanes waiting at the textually-first call site. Clears s from
// simd_mask unless lanes wait at another site too.
static void resolve_simd(group_state& g, unsigned s) {
  unsigned base = s * 32, end = base + 32 < g.n ? base + 32 : g.n;
  unsigned best = 0xffffffffu;
  for (unsigned i = base; i < end; i++) {
    msl_thread* t = &g.threads[i];
    if (t->state == ST_BLOCKED && t->kind == MSL_WAIT_SIMD && t->site < best) best = t->site;
  }
  msl_thread* by_lane[32] = {0};
  unsigned mask = 0;
  bool others = false;
  msl_resolve_fn fn = 0;
  for (unsigned i = base; i < end; i++) {
    msl_thread* t = &g.threads[i];
    if (t->state != ST_BLOCKED || t->kind != MSL_WAIT_SIMD) continue;
    if (t->site != best) {
      others = true;
      continue;
    }
    by_lane[i - base] = t;
    mask |= 1u << (i - base);
    fn = t->resolve;
  }
  if (fn) fn(by_lane, mask);
  for (unsigned l = 0; l < 32; l++)
    if (by_lane[l]) {
      by_lane[l]->state = ST_READY;
      by_lane[l]->kind = MSL_WAIT_NONE;
    }
  if (!others) g.simd_mask &= ~(1u << s);
}

// Run the runnable lanes of SIMD group s until each blocks or finishes.
static void run_simd_group(group_state& g, unsigned s, int order) {
  unsigned base = s * 32, cnt = base + 32 < g.n ? 32 : g.n - base;
  if (order == 2) shuffle(g.lanes + base, cnt);
  g_run = g.lanes + base;
  g_run_n = cnt;
  for (unsigned k = 0; k < cnt; k++) {
    msl_thread* t = &g.threads[g_run[k]];
    if (t->state == ST_READY) {
      g_cursor = k;
      resume(t);  // runs t and, chained, every runnable lane after it
#ifndef MSL_FIBER_UCONTEXT
      break;
#endif
    }
  }
}

// The SIMD group to advance among those in m (not empty)
static inline unsigned pick_group(unsigned m, int order) {
  if (order == 0) return (unsigned)__builtin_ctz(m);
  if (order == 1) return 31u - (unsigned)__builtin_clz(m);
  for (unsigned k = rand_below((unsigned)__builtin_popcount(m)); k; k--) m &= m - 1;
  return (unsigned)__builtin_ctz(m);
}

static void release_barrier(group_state& g, int strict) {
  unsigned first = 0xffffffffu;
  for (unsigned i = 0; i < g.n; i++) {
    msl_thread* t = &g.threads[i];
    if (t->state != ST_BLOCKED) continue;
    if (first == 0xffffffffu) first = i;
    if (strict && t->site != g.threads[first].site) {
      char a[96], b[96], s1[80], s2[80];
      describe_thread(a, sizeof a, &g.threads[first]);
      describe_thread(b, sizeof b, t);
      describe_site(s1, sizeof s1, g.threads[first].site);
      describe_site(s2, sizeof s2, t->site);
      snprintf(g_launch->err, g_launch->err_cap,
               "strict: divergent threadgroup_barrier: %s waits at %s but %s waits at %s",
               a, s1, b, s2);
      bail(8);
    }
  }
  if (strict && g.alive != g.n) {
    for (unsigned i = 0; i < g.n; i++)
      if (g.threads[i].state == ST_DONE) {
        char a[96], b[96], s1[80];
        describe_thread(a, sizeof a, &g.threads[i]);
        describe_thread(b, sizeof b, &g.threads[first]);
        describe_site(s1, sizeof s1, g.threads[first].site);
        snprintf(g_launch->err, g_launch->err_cap,
                 "strict: divergent threadgroup_barrier: %s returned while %s waits at %s", a,
                 b, s1);
        bail(8);
      }
  }
  for (unsigned i = 0; i < g.n; i++) {
    msl_thread* t = &g.threads[i];
    if (t->state == ST_BLOCKED) {
      t->state = ST_READY;
      t->kind = MSL_WAIT_NONE;
      g.ready_mask |= 1u << (i / 32);
    }
  }
}

static void run_group(const msl_launch* L, const unsigned gid[3]) {
  group_state& g = g_group;
  unsigned tsz[3], tgn[3];
  for (int d = 0; d < 3; d++) {
    tgn[d] = (L->grid[d] + L->threadgroup[d] - 1) / L->threadgroup[d];
    unsigned start = gid[d] * L->threadgroup[d];
    unsigned left = L->grid[d] - start;
    tsz[d] = left < L->threadgroup[d] ? left : L->threadgroup[d];  // edge groups are partial
  }
  unsigned n = tsz[0] * tsz[1] * tsz[2];
  unsigned nd = L->threadgroup[0] * L->threadgroup[1] * L->threadgroup[2];
  g.threads = g_threads;
  g.n = n;
  g.alive = n;
  g.tg_used = 0;
  g.nsites = 0;
  unsigned sgs = (n + 31) / 32, dsgs = (nd + 31) / 32, qgs = (n + 3) / 4, dqgs = (nd + 3) / 4;
  unsigned i = 0;
  for (unsigned z = 0; z < tsz[2]; z++)
  for (unsigned y = 0; y < tsz[1]; y++)
  for (unsigned x = 0; x < tsz[0]; x++, i++) {
    msl_thread* t = &g_threads[i];
    unsigned loc[3] = {x, y, z};
    for (int d = 0; d < 3; d++) {
      t->thread_position_in_threadgroup[d] = loc[d];
      t->threadgroup_position_in_grid[d] = gid[d];
      t->thread_position_in_grid[d] = gid[d] * L->threadgroup[d] + loc[d];
      t->threads_per_threadgroup[d] = tsz[d];
      t->dispatch_threads_per_threadgroup[d] = L->threadgroup[d];
      t->threadgroups_per_grid[d] = tgn[d];
      t->threads_per_grid[d] = L->grid[d];
    }
    t->thread_index_in_threadgroup = i;
    t->thread_index_in_simdgroup = i % 32;
    t->simdgroup_index_in_threadgroup = i / 32;
    t->simdgroups_per_threadgroup = sgs;
    t->dispatch_simdgroups_per_threadgroup = dsgs;
    t->thread_index_in_quadgroup = i % 4;
    t->quadgroup_index_in_threadgroup = i / 4;
    t->quadgroups_per_threadgroup = qgs;
    t->dispatch_quadgroups_per_threadgroup = dqgs;
    t->kind = MSL_WAIT_NONE;
    t->state = ST_READY;
    char* stack = L->stacks + i * L->stack_size;
    if (L->direct) continue;
#ifdef MSL_FIBER_UCONTEXT
    static ucontext_t uctx[MSL_MAX_TG];
    t->uctx = &uctx[i];
    getcontext(&uctx[i]);
    uctx[i].uc_stack.ss_sp = stack + 4096;
    uctx[i].uc_stack.ss_size = L->stack_size - 4096;
    uctx[i].uc_link = 0;
    unsigned long p = (unsigned long)t;
    makecontext(&uctx[i], (void (*)())fiber_uc_start, 2, (unsigned)(p >> 32), (unsigned)p);
#else
    t->sp = fiber_prepare(stack, L->stack_size, t);
#endif
  }
  make_order(g, L->order);
  if (L->direct) {
    // Elementwise kernels: nothing can block, so each thread is a plain call.
    for (unsigned k = 0; k < n; k++) {
      msl_thread* t = &g_threads[g.perm[k]];
      g_api.current = t;
      L->entry(L->buffers, t);
    }
    g_api.current = 0;
    return;
  }
  // One SIMD group at a time. Invariant between steps: no thread is
  // runnable except the lanes of the groups in ready_mask.
  g.ready_mask = sgs == 32 ? 0xffffffffu : (1u << sgs) - 1;
  g.simd_mask = 0;
  for (;;) {
    unsigned m = g.ready_mask | g.simd_mask;
    if (m == 0) {
      if (g.alive == 0) return;
      release_barrier(g, L->strict);  // every live thread waits at a barrier
      continue;
    }
    unsigned s = pick_group(m, L->order), bit = 1u << s;
    if (g.ready_mask & bit) g.ready_mask &= ~bit;  // released by a barrier: never in simd_mask
    else resolve_simd(g, s);
    run_simd_group(g, s, L->order);
  }
}

MSL_EXPORT const msl_api* msl_runtime_api() {
  g_api.block = api_block;
  g_api.tg_alloc = api_tg_alloc;
  g_api.fail = api_fail;
  return &g_api;
}

MSL_EXPORT int msl_run(const msl_launch* L) {
  unsigned nt = L->threadgroup[0] * L->threadgroup[1] * L->threadgroup[2];
  if (nt > MSL_MAX_TG || nt > L->nstacks) {
    snprintf(L->err, L->err_cap, "threadgroup of %u threads exceeds the limit of %u", nt,
             MSL_MAX_TG);
    return 1;
  }
  g_launch = L;
  msl_runtime_api();
  g_rng = L->seed * 2654435761ULL + 88172645463325252ULL;
  g_timed_out = 0;
  int have_wd = L->watchdog_s > 0;
  install_signals();
  if (have_wd) watchdog_arm(L->watchdog_s);
  g_in_launch = 1;
  int rc = sigsetjmp(g_jmp, 1);
  if (rc == 0) {
    unsigned ng[3];
    for (int d = 0; d < 3; d++) ng[d] = (L->grid[d] + L->threadgroup[d] - 1) / L->threadgroup[d];
    unsigned long total = (unsigned long)ng[0] * ng[1] * ng[2];
    for (unsigned long k = 0; k < total; k++) {
      // Threadgroups run one after another; reverse order reverses them too.
      unsigned long q = L->order == 1 ? total - 1 - k : k;
      unsigned gid[3] = {(unsigned)(q % ng[0]), (unsigned)((q / ng[0]) % ng[1]),
                         (unsigned)(q / ((unsigned long)ng[0] * ng[1]))};
      run_group(L, gid);
    }
  }
  g_in_launch = 0;
  g_api.current = 0;
  if (have_wd) watchdog_disarm();
  restore_signals();
  return rc;
}
