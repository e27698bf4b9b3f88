default-cpu
