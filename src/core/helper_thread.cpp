#include "core/helper_thread.h"

#include <system_error>

namespace kiln {

HelperThread::HelperThread(std::function<void()> fn) : fn_(std::move(fn)) {
  pthread_attr_t attr;
  if (int e = pthread_attr_init(&attr)) throw std::system_error(e, std::generic_category(), "pthread_attr_init");
  have_allowed_ = sched_getaffinity(0, sizeof(allowed_), &allowed_) == 0;
  const int here = creator_cpu_ = sched_getcpu();
  if (have_allowed_ && here >= 0 && CPU_ISSET(here, &allowed_) && CPU_COUNT(&allowed_) > 1) {
    cpu_set_t others = allowed_;
    CPU_CLR(here, &others);
    pthread_attr_setaffinity_np(&attr, sizeof(others), &others);  // a placement hint: failure is harmless
  }
  const int e = pthread_create(&thread_, &attr, &HelperThread::start, this);
  pthread_attr_destroy(&attr);
  if (e) throw std::system_error(e, std::generic_category(), "pthread_create");
  joinable_ = true;
}

HelperThread::~HelperThread() { join(); }

void HelperThread::join() {
  if (!joinable_) return;
  pthread_join(thread_, nullptr);
  joinable_ = false;
}

void* HelperThread::start(void* self) {
  auto* h = static_cast<HelperThread*>(self);
  h->first_cpu_ = sched_getcpu();
  if (h->have_allowed_) pthread_setaffinity_np(pthread_self(), sizeof(h->allowed_), &h->allowed_);
  h->fn_();
  return nullptr;
}

}  // namespace kiln
