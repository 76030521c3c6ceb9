// threads.cpp: see threads.h.

#include "threads.h"

#include <chrono>
#include <cstdlib>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fsx_cpu {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

constexpr auto kSpin = std::chrono::microseconds(100);

} // namespace

int default_threads() {
  if (const char* env = std::getenv("FSX_CPU_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) {
      return n;
    }
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) {
      return n;
    }
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

ThreadPool& ThreadPool::instance() {
  // Leaked on purpose: joining threads from a static destructor at interpreter
  // exit can deadlock; the OS reclaims them.
  static ThreadPool* pool = new ThreadPool();
  return *pool;
}

ThreadPool::ThreadPool() {
  wanted_ = default_threads();
}

ThreadPool::~ThreadPool() {
  stop_all();
}

void ThreadPool::set_size(int n) {
  wanted_ = n < 1 ? 1 : n;
}

void ThreadPool::start(int n_threads) {
  stop_all();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  for (int i = 1; i < n_threads; i++) {
    workers_.emplace_back([this] { worker_loop(); });
  }
}

void ThreadPool::stop_all() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_++;
  }
  cv_.notify_all();
  for (auto& t : workers_) {
    t.join();
  }
  workers_.clear();
}

void ThreadPool::drain(Job& job) {
  for (int i; (i = job.next.fetch_add(1, std::memory_order_relaxed)) < job.n;) {
    (*job.fn)(i);
    job.done.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = generation_.load();
  while (true) {
    // Spin a little: the next job usually comes within microseconds.
    auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0; generation_.load(std::memory_order_acquire) == seen; i++) {
      cpu_relax();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) {
        break;
      }
    }
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen || stop_; });
      if (stop_) {
        return;
      }
      seen = generation_.load();
      job = job_;
    }
    if (job) {
      drain(*job);
    }
  }
}

void ThreadPool::run(int n_chunks, const std::function<void(int)>& fn) {
  std::lock_guard<std::mutex> run_lock(run_mu_);
  int wanted = wanted_.load();
  if (n_chunks > 1 && static_cast<int>(workers_.size()) + 1 != wanted) {
    start(wanted);
  }
  if (workers_.empty() || n_chunks <= 1) {
    for (int i = 0; i < n_chunks; i++) {
      fn(i);
    }
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n_chunks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = job;
    generation_++;
  }
  cv_.notify_all();
  drain(*job);
  // Wait for chunks other threads claimed but have not finished.
  // On a busy machine that thread may be waiting for a core: after a while,
  // offer ours.
  for (int i = 0; job->done.load(std::memory_order_acquire) < n_chunks; i++) {
    if (i < 20000) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  job_.reset();
}

} // namespace fsx_cpu
