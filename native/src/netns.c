/*
 * Entering a network namespace for the duration of one syscall sequence (the "setns dance").
 *
 * A socket, or a tap device opened through /dev/net/tun, belongs to the network namespace of the
 * thread that created it, for its whole life, whatever namespace the process is in later. So to
 * make an fd inside namespace N: open N's handle (/var/run/netns/NAME or /proc/PID/ns/net) and
 * our own (/proc/thread-self/ns/net), setns(N), create the fd, setns back. setns(CLONE_NEWNET)
 * changes only the calling thread, here the Node main thread; libuv's worker threads are never
 * affected, and control returns to JavaScript only after the original namespace is restored.
 *
 * Restoring cannot fail in practice (we hold an fd of the original namespace and just proved we
 * may call setns); if it ever did, continuing would run the whole process in the wrong
 * namespace, so that case aborts with a message instead.
 */
#include "common.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool netns_enter(napi_env env, const char *path, netns_guard *g) {
  int target, orig, err;
  g->original = -1;
  if (path == NULL || path[0] == 0) return true;
  target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) return throw_errno(env, errno, "open (network namespace)");
  orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig < 0) {
    err = errno;
    close(target);
    return throw_errno(env, err, "open /proc/thread-self/ns/net");
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    err = errno;
    close(target);
    close(orig);
    return throw_errno(env, err, "setns");
  }
  close(target);
  g->original = orig;
  return true;
}

void netns_leave(netns_guard *g) {
  int saved = errno;
  if (g->original < 0) return;
  if (setns(g->original, CLONE_NEWNET) < 0) {
    fprintf(stderr, "usernet native: cannot return to the original network namespace: %s\n", strerror(errno));
    abort();
  }
  close(g->original);
  g->original = -1;
  errno = saved;
}
