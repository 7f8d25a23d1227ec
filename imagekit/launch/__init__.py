"""Running verified images in local qemu VMs: plan and execute, instances, lifecycle, disks."""
