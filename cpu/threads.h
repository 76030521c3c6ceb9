// threads.h: the worker threads the CPU kernels split a product across.
//
// MLX's CPU stream runs each primitive on one thread; a matvec on one core
// reads memory at a fraction of what two or more cores can. The pool keeps
// size() - 1 workers alive and the calling thread (MLX's stream thread) works
// too, so run() never hands off work only to wait for it.
//
// run(n_chunks, fn) calls fn(i) once for every i in [0, n_chunks), from any
// thread, and returns when all have returned. Chunks are claimed one at a time
// from a shared counter (not split up front), so a worker the OS has not
// scheduled yet costs nothing: the others take its share. A late worker can
// only see a finished job's counter, which is past the end, because each job
// is its own object that it holds by shared_ptr.
//
// Between jobs a worker spins for ~100 us (decoding launches a matvec every
// few tens of microseconds), then sleeps on a condition variable.
//
// The size: FSX_CPU_THREADS, else the CPUs this process may run on.
// set_size() takes effect at the next run(), on the thread that runs jobs.

#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fsx_cpu {

class ThreadPool {
 public:
  static ThreadPool& instance();

  int size() const {
    return wanted_.load();
  }
  void set_size(int n);
  void run(int n_chunks, const std::function<void(int)>& fn);

  ~ThreadPool();

 private:
  struct Job {
    const std::function<void(int)>* fn;
    int n;
    std::atomic<int> next{0};
    std::atomic<int> done{0};
  };

  ThreadPool();
  void start(int n_threads);
  void stop_all();
  void worker_loop();
  static void drain(Job& job);

  std::mutex run_mu_; // one job at a time
  std::mutex mu_; // guards job_ and stop_
  std::condition_variable cv_;
  std::shared_ptr<Job> job_;
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::vector<std::thread> workers_;
  std::atomic<int> wanted_{1};
};

int default_threads();

} // namespace fsx_cpu
