/*
 * st_mem.h — how much memory this process may use: the host's physical memory, or less where
 * its cgroup caps it (a systemd unit's MemoryMax=, a container's limit), so that defaults sized
 * from memory fit the process as it is run rather than the host it happens to be on.
 */
#ifndef ST_MEM_H
#define ST_MEM_H

#include <stdint.h>

/* Bytes: the smaller of physical memory and the memory bound of this process's cgroup and
 * its ancestors (cgroup v2 memory.max and memory.high, v1 memory.limit_in_bytes); physical
 * memory when no bound is set or readable. 0 only if not even physical memory is known. Any
 * thread; reads /proc and /sys. The cgroup file systems are taken to be mounted at
 * /sys/fs/cgroup (v2) and /sys/fs/cgroup/memory (v1), as systemd and container runtimes mount
 * them; a hierarchy mounted elsewhere is not looked for (no bound: physical memory). */
uint64_t st_mem_limit(void);
/* Bytes of physical memory (sysconf), 0 if unknown. */
uint64_t st_mem_physical(void);

/*
 * st_mem_limit from given sources, for tests: phys bytes of physical memory (0: unknown),
 * proc_cgroup the text of /proc/self/cgroup (NULL: none), cgroup_root the directory where the
 * cgroup file systems are mounted ("/sys/fs/cgroup"). Lines it cannot parse, paths with a ".."
 * component and files it cannot read are ignored; a v2 bound ("0::/path" and <root>/path/
 * memory.max or memory.high, or an ancestor's) is looked up, and where there is none a v1 one
 * (":memory:" in the controller list and <root>/memory/path/memory.limit_in_bytes, or an
 * ancestor's). "max", 0 and values of 2^62 or more (v1's "unlimited") are no limit.
 */
uint64_t st_mem_limit_from(uint64_t phys, const char *proc_cgroup, const char *cgroup_root);

#endif
