/* Node configuration (XEP-0060 §8.2, §16.4): defaults, forms, the store
 * encoding.  Skeleton. */
#include "pubsub.h"
