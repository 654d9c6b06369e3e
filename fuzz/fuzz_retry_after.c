/* libFuzzer target: Retry-After parsing of whatever a server sends.
 * Property: never crashes, and the wait is either "unusable" (-1) or a
 * finite number of seconds >= 0. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "../csrc/fileapi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    double s = fa_retry_after((const char *)data, size, 1700000000.0);
    if (!(s == -1 || (s >= 0 && isfinite(s))))
        abort();
    return 0;
}
