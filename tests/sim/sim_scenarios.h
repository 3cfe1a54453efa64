/* Scripted fault schedules for sim_cluster: the Phoenix.Tracker shard
 * replication checks (heartbeats, catch-up of a deaf node, kill and
 * permdown, restart under a new vsn, suspend and resume, owner exit,
 * untrack and update, graceful permdown) and known hard cases. Each runs
 * with every invariant of sim_run checked. */
#ifndef HARK_SIM_SCENARIOS_H
#define HARK_SIM_SCENARIOS_H

#include <stddef.h>

#include "sim_cluster.h"

size_t sim_scenario_count(void);
const char *sim_scenario_name(size_t i);
/* Builds scenario i into `out`; free it with sim_schedule_free. */
void sim_scenario_build(size_t i, sim_schedule *out);
/* The index of the scenario called `name`, or -1. */
long sim_scenario_find(const char *name);

#endif
