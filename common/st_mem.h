/*
 * st_mem.h — how much memory this process may use: the host's physical memory, or less where
 * its cgroup caps it (a systemd unit's MemoryMax=, a container's limit), so that defaults sized
 * from memory fit the process as it is run rather than the host it happens to be on.
 */
#ifndef ST_MEM_H
#define ST_MEM_H

#include <stdint.h>

/* Bytes: the smaller of physical memory and the memory limit of this process's cgroup
 * (cgroup v2 memory.max, v1 memory.limit_in_bytes); physical memory when no limit is set or
 * readable. 0 only if not even physical memory is known. Any thread; reads /proc and /sys. */
uint64_t st_mem_limit(void);

/*
 * The same from given sources, for tests: phys bytes of physical memory (0: unknown),
 * proc_cgroup the text of /proc/self/cgroup (NULL: none), cgroup_root the directory where the
 * cgroup file systems are mounted ("/sys/fs/cgroup"). Lines it cannot parse and files it
 * cannot read are ignored; a v2 limit ("0::/path" and <root>/path/memory.max) is looked up,
 * else a v1 one (":memory:" in the controller list and <root>/memory/path/
 * memory.limit_in_bytes). "max", 0 and values of 2^62 or more (v1's "unlimited") are no limit.
 */
uint64_t st_mem_limit_from(uint64_t phys, const char *proc_cgroup, const char *cgroup_root);

#endif
