#pragma once

#include <pthread.h>
#include <sched.h>

#include <functional>

namespace kiln {

// A thread that starts on a CPU other than its creator's, where the process may run on another.
//
// Left to itself, the scheduler often queues a new thread on its creator's CPU, behind the creator, until it
// rebalances: on the 2-vCPU benchmark machine half of all new threads started 1-4 ms late that way, a stall a
// model's start-up (prefault, kernel preparation) waited on. The thread is created allowed only on the other CPUs,
// and widens its affinity back to the creator's whole set before it runs `fn`, so the scheduler stays free to
// move it afterwards.
class HelperThread {
 public:
  // Throws std::system_error when no thread can be created. `fn` must not throw (as with std::thread, an
  // exception leaving it terminates the process).
  explicit HelperThread(std::function<void()> fn);
  ~HelperThread();  // joins
  HelperThread(const HelperThread&) = delete;
  HelperThread& operator=(const HelperThread&) = delete;

  void join();

  // The CPU the creator ran on when it made the thread, and the one the thread first ran on (before it widened its
  // affinity): -1 where unknown. For tests.
  int creator_cpu() const { return creator_cpu_; }
  int first_cpu() const { return first_cpu_; }

 private:
  static void* start(void* self);

  std::function<void()> fn_;
  cpu_set_t allowed_;
  bool have_allowed_ = false;
  pthread_t thread_{};
  bool joinable_ = false;
  int creator_cpu_ = -1;
  int first_cpu_ = -1;  // written by the thread before fn, read after join
};

}  // namespace kiln
