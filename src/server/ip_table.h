/* Open connections per client IP address, for the per-address limit. */
#ifndef HARK_SERVER_IP_TABLE_H
#define HARK_SERVER_IP_TABLE_H

#include <stdint.h>

/* An IPv6 address, or an IPv4 address in its IPv4-mapped IPv6 form. */
typedef struct hark_ip_key {
  uint8_t bytes[16];
} hark_ip_key;

typedef struct hark_ip_slot {
  hark_ip_key key;
  uint32_t count; /* 0 marks an empty slot */
} hark_ip_slot;

/* A zeroed struct is an empty table. */
typedef struct hark_ip_table {
  hark_ip_slot *slots;
  uint32_t capacity; /* a power of two, or 0 */
  uint32_t used;
} hark_ip_table;

/* Adds one connection for `key` and returns the address's new count, or 0
 * when out of memory (nothing is changed then). */
uint32_t hark_ip_table_add(hark_ip_table *table, const hark_ip_key *key);

/* Removes one connection for `key`; the entry goes when its count is 0. */
void hark_ip_table_remove(hark_ip_table *table, const hark_ip_key *key);

uint32_t hark_ip_table_count(const hark_ip_table *table, const hark_ip_key *key);

void hark_ip_table_free(hark_ip_table *table);

#endif
