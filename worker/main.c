/* worker/main.c — placeholder entry point while the daemon is written. */
#include <stdio.h>
int main(void) { puts("snapworker 0.1.0"); return 0; }
