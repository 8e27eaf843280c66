/* The PubSub tables (schemas/<driver>/014_pubsub.sql).  Skeleton. */
#include "pubsub.h"
