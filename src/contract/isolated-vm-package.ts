/**
 * Which isolated-vm package a sandbox loads on this Node, in order of preference (docs/operations.md
 * "Node versions"): 5.0.4 builds for Node 20 and 22, 6.2.0 for Node 22 and 24, installed under the name
 * isolated-vm-6; npm leaves out the one that does not build here. Shared by the sandbox, which loads
 * it, and the front, which only checks that the sandbox user can read it (and never loads it).
 */
export function isolatedVmPackagesFor(nodeMajor: number): string[] {
  return nodeMajor >= 24 ? ['isolated-vm-6', 'isolated-vm'] : ['isolated-vm', 'isolated-vm-6'];
}

export const NODE_MAJOR = Number(process.versions.node.split('.')[0]);
