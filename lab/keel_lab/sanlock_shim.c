/* keel-lab only: lets the real sanlock daemon start in a sandbox that lacks
 * CAP_SYS_RESOURCE. sanlock raises RLIMIT_MEMLOCK at start and exits when
 * that fails; here a refused setrlimit() reports success instead. Never used
 * on real hosts. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/resource.h>

int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim)
{
    static int (*real_setrlimit)(__rlimit_resource_t, const struct rlimit *);
    int rc;

    if (!real_setrlimit)
        real_setrlimit = dlsym(RTLD_NEXT, "setrlimit");
    rc = real_setrlimit(resource, rlim);
    if (rc < 0 && errno == EPERM) {
        errno = 0;
        return 0;
    }
    return rc;
}
