// msl_abi.h — the contract between a compiled kernel and the fiber runtime.
//
// Two shared objects meet here:
//   * the runtime (fiber_runtime.cpp, compiled once and cached): fibers,
//     the per-threadgroup scheduler, barriers, SIMD-group resolution,
//     threadgroup memory, the watchdog and fault reporting;
//   * one kernel (metal_runtime.h + the generated source, compiled per
//     kernel/template instantiation): the Metal language surface.
// They share only the plain structs below, so this header includes nothing.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

struct msl_thread;

// Called by the runtime once every lane of a SIMD group waiting at one call
// site is known. by_lane[i] is lane i's thread, or 0 when lane i is not part
// of this operation (inactive: exited, in another branch, or nonexistent).
typedef void (*msl_resolve_fn)(struct msl_thread* const* by_lane, unsigned active_mask);

// One Metal thread: its attributes (filled by the runtime before it starts)
// and what it is waiting for when it is blocked.
struct msl_thread {
  // ---- Metal thread attributes ([[thread_position_in_grid]] and friends)
  unsigned thread_position_in_grid[3];
  unsigned thread_position_in_threadgroup[3];
  unsigned threadgroup_position_in_grid[3];
  unsigned threads_per_threadgroup[3];           // actual size (edge groups are smaller)
  unsigned dispatch_threads_per_threadgroup[3];  // size asked for at dispatch
  unsigned threadgroups_per_grid[3];
  unsigned threads_per_grid[3];
  unsigned thread_index_in_threadgroup;
  unsigned thread_index_in_simdgroup;
  unsigned simdgroup_index_in_threadgroup;
  unsigned simdgroups_per_threadgroup;
  unsigned dispatch_simdgroups_per_threadgroup;
  unsigned thread_index_in_quadgroup;
  unsigned quadgroup_index_in_threadgroup;
  unsigned quadgroups_per_threadgroup;
  unsigned dispatch_quadgroups_per_threadgroup;

  // ---- what the thread waits for while blocked (kind != 0)
  int kind;                 // MSL_WAIT_*
  unsigned site;            // call site: (file bit, line, column)
  msl_resolve_fn resolve;   // SIMD ops: combines the lanes' in -> out
  const void* in;           // this lane's operand (lives on its fiber stack)
  void* out;                // where this lane's result goes
  long long arg;            // op argument (shuffle lane, delta, ...)
  const void* in2;          // second operand (simdgroup matrix ops)
  const void* in3;

  // ---- runtime-private
  void* sp;                 // saved stack pointer of the fiber
  void* uctx;               // ucontext fallback
  int state;
  unsigned order_index;
};

enum { MSL_WAIT_NONE = 0, MSL_WAIT_SIMD = 1, MSL_WAIT_BARRIER = 2 };

// The services a kernel calls. The runtime hands a pointer to this table to
// each kernel once, when the kernel's shared object is loaded.
struct msl_api {
  struct msl_thread* volatile current;        // the thread now running
  void (*block)(struct msl_thread* self);     // wait until `kind` is resolved
  void* (*tg_alloc)(struct msl_thread* self, unsigned site, unsigned long size,
                    unsigned long align);     // threadgroup variable at a site
  void (*fail)(struct msl_thread* self, const char* message);  // does not return
};

typedef void (*msl_entry_fn)(void* const* buffers, struct msl_thread* self);

struct msl_launch {
  msl_entry_fn entry;
  void* const* buffers;       // kernel arguments in [[buffer(i)]] order
  unsigned grid[3];           // in threads
  unsigned threadgroup[3];    // already clamped to the grid, as MLX does
  int order;                  // 0 forward, 1 reverse, 2 random
  unsigned long long seed;
  int strict;                 // report divergent barriers
  double watchdog_s;          // 0 = no watchdog
  char* stacks;               // nstacks regions of stack_size bytes, guard page lowest
  unsigned long stack_size;
  unsigned long nstacks;
  char* tg_mem;               // threadgroup memory arena
  unsigned long tg_mem_size;
  int nranges;                // device/constant buffers, for fault reports
  const unsigned long* range_lo;
  const unsigned long* range_hi;
  char* err;                  // message buffer, filled when msl_run returns != 0
  unsigned long err_cap;
  int direct;                 // no barrier/SIMD calls in the source: plain calls, no fibers
};

#ifdef __cplusplus
}
#endif
