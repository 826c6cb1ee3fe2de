/**
 * What each cloud sells in the 16–32 GB range, with where and for how much.
 *
 * Prices change and types retire: this list is dated, and each cloud's entry names its source. Refresh it from the
 * same sources (Hetzner's price list / `hcloud server-type list`, DigitalOcean's `doctl compute size list`) and bump
 * the date; the tests pin the picks, so a refresh that changes a default shows up as a failing test to review.
 */

export type Cloud = "hetzner" | "digitalocean";
export type Arch = "x86_64" | "arm64";

export interface ServerType {
  /** Hetzner server type name or DigitalOcean droplet size slug. */
  name: string;
  vcpus: number;
  memoryGb: number;
  diskGb: number;
  arch: Arch;
  /** Monthly price in the catalogue's currency, excluding VAT (Hetzner: including a primary IPv4). */
  monthlyPrice: number;
  /** Locations (Hetzner) or regions (DigitalOcean) where new servers of this type can be ordered. */
  sold: readonly string[];
  note?: string;
}

export interface CloudCatalogue {
  cloud: Cloud;
  currency: "EUR" | "USD";
  /** The day the figures were read, and from where. */
  asOf: string;
  source: string;
  locations: readonly string[];
  defaultLocation: string;
  /** Image slugs this project supports (its cloud-init is tested on Debian 13 and accepted on Ubuntu 24.04). */
  images: { debian13: string; ubuntu2404: string };
  types: readonly ServerType[];
  /** Names no longer sold, with what replaced them, so that an old config gets a useful answer. */
  retired?: Readonly<Record<string, string>>;
  /** Block-storage volumes: where the cloud offers them, the sizes it accepts, and what a kept one costs. */
  volumes: { locations: readonly string[]; minGb: number; maxGb: number; pricePerGbMonth: string };
}

const HETZNER_EU = ["fsn1", "nbg1", "hel1"] as const;
const HETZNER_ALL = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"] as const;

export const hetznerCatalogue: CloudCatalogue = {
  cloud: "hetzner",
  currency: "EUR",
  asOf: "2026-09-29",
  source: "Hetzner Cloud price list (server types, EUR/month excl. VAT incl. IPv4)",
  locations: HETZNER_ALL,
  defaultLocation: "fsn1",
  // Volumes are offered in every Hetzner Cloud location; 10 GB is the smallest, 10 TB the largest.
  volumes: { locations: HETZNER_ALL, minGb: 10, maxGb: 10240, pricePerGbMonth: "about 0.05 EUR" },
  images: { debian13: "debian-13", ubuntu2404: "ubuntu-24.04" },
  // The cx22–cx52 and cpx11–cpx51 generation was retired around the end of 2025.
  retired: { cx42: "cx43", cx52: "cx53", cpx41: "cpx42", cpx51: "cpx62" },
  types: [
    {
      name: "cx43",
      vcpus: 8,
      memoryGb: 16,
      diskGb: 160,
      arch: "x86_64",
      monthlyPrice: 16.49,
      sold: HETZNER_EU,
      note: "shared vCPU",
    },
    {
      name: "cx53",
      vcpus: 16,
      memoryGb: 32,
      diskGb: 320,
      arch: "x86_64",
      monthlyPrice: 29.99,
      sold: HETZNER_EU,
      note: "shared vCPU",
    },
    {
      name: "cax31",
      vcpus: 8,
      memoryGb: 16,
      diskGb: 160,
      arch: "arm64",
      monthlyPrice: 21.49,
      sold: HETZNER_EU,
      note: "Ampere, shared vCPU",
    },
    {
      name: "cax41",
      vcpus: 16,
      memoryGb: 32,
      diskGb: 320,
      arch: "arm64",
      monthlyPrice: 41.49,
      sold: HETZNER_EU,
      note: "Ampere, shared vCPU",
    },
    {
      name: "cpx42",
      vcpus: 8,
      memoryGb: 16,
      diskGb: 320,
      arch: "x86_64",
      monthlyPrice: 69.99,
      sold: [...HETZNER_EU, "sin"],
      note: "AMD, shared vCPU",
    },
    {
      name: "cpx62",
      vcpus: 16,
      memoryGb: 32,
      diskGb: 640,
      arch: "x86_64",
      monthlyPrice: 130.49,
      sold: [...HETZNER_EU, "sin"],
      note: "AMD, shared vCPU",
    },
    {
      name: "ccx23",
      vcpus: 4,
      memoryGb: 16,
      diskGb: 160,
      arch: "x86_64",
      monthlyPrice: 86.49,
      sold: HETZNER_ALL,
      note: "dedicated vCPU",
    },
    {
      name: "ccx33",
      vcpus: 8,
      memoryGb: 32,
      diskGb: 240,
      arch: "x86_64",
      monthlyPrice: 138.99,
      sold: HETZNER_ALL,
      note: "dedicated vCPU",
    },
  ],
};

const DO_REGIONS = [
  "ams3",
  "atl1",
  "blr1",
  "fra1",
  "lon1",
  "nyc1",
  "nyc3",
  "sfo2",
  "sfo3",
  "sgp1",
  "syd1",
  "tor1",
] as const;

export const digitalOceanCatalogue: CloudCatalogue = {
  cloud: "digitalocean",
  currency: "USD",
  asOf: "2026-08-15",
  source: "DigitalOcean sizes API (USD/month)",
  locations: DO_REGIONS,
  // Block storage in every region of this catalogue; 1 GB to 16 TB.
  volumes: { locations: DO_REGIONS, minGb: 1, maxGb: 16384, pricePerGbMonth: "0.10 USD" },
  defaultLocation: "fra1",
  images: { debian13: "debian-13-x64", ubuntu2404: "ubuntu-24-04-x64" },
  // DigitalOcean sells every size below in every listed region; some accounts must ask support before 16 GB+ droplets.
  types: [
    {
      name: "s-4vcpu-16gb-amd",
      vcpus: 4,
      memoryGb: 16,
      diskGb: 200,
      arch: "x86_64",
      monthlyPrice: 84,
      sold: DO_REGIONS,
      note: "premium AMD",
    },
    {
      name: "m-2vcpu-16gb",
      vcpus: 2,
      memoryGb: 16,
      diskGb: 50,
      arch: "x86_64",
      monthlyPrice: 84,
      sold: DO_REGIONS,
      note: "memory-optimised",
    },
    {
      name: "s-8vcpu-16gb",
      vcpus: 8,
      memoryGb: 16,
      diskGb: 320,
      arch: "x86_64",
      monthlyPrice: 96,
      sold: DO_REGIONS,
      note: "basic",
    },
    {
      name: "s-8vcpu-16gb-amd",
      vcpus: 8,
      memoryGb: 16,
      diskGb: 320,
      arch: "x86_64",
      monthlyPrice: 112,
      sold: DO_REGIONS,
      note: "premium AMD",
    },
    {
      name: "s-8vcpu-16gb-intel",
      vcpus: 8,
      memoryGb: 16,
      diskGb: 320,
      arch: "x86_64",
      monthlyPrice: 112,
      sold: DO_REGIONS,
      note: "premium Intel",
    },
    {
      name: "g-4vcpu-16gb",
      vcpus: 4,
      memoryGb: 16,
      diskGb: 50,
      arch: "x86_64",
      monthlyPrice: 126,
      sold: DO_REGIONS,
      note: "general purpose",
    },
    {
      name: "c-8",
      vcpus: 8,
      memoryGb: 16,
      diskGb: 100,
      arch: "x86_64",
      monthlyPrice: 168,
      sold: DO_REGIONS,
      note: "CPU-optimised",
    },
    {
      name: "s-8vcpu-32gb-amd",
      vcpus: 8,
      memoryGb: 32,
      diskGb: 640,
      arch: "x86_64",
      monthlyPrice: 168,
      sold: DO_REGIONS,
      note: "premium AMD",
    },
    {
      name: "m-4vcpu-32gb",
      vcpus: 4,
      memoryGb: 32,
      diskGb: 100,
      arch: "x86_64",
      monthlyPrice: 168,
      sold: DO_REGIONS,
      note: "memory-optimised",
    },
    {
      name: "g-8vcpu-32gb",
      vcpus: 8,
      memoryGb: 32,
      diskGb: 100,
      arch: "x86_64",
      monthlyPrice: 252,
      sold: DO_REGIONS,
      note: "general purpose",
    },
    {
      name: "c-16",
      vcpus: 16,
      memoryGb: 32,
      diskGb: 200,
      arch: "x86_64",
      monthlyPrice: 336,
      sold: DO_REGIONS,
      note: "CPU-optimised",
    },
  ],
};

export function catalogueFor(cloud: Cloud): CloudCatalogue {
  switch (cloud) {
    case "hetzner":
      return hetznerCatalogue;
    case "digitalocean":
      return digitalOceanCatalogue;
    default: {
      const never: never = cloud;
      throw new Error(`unknown cloud ${String(never)}`);
    }
  }
}

/**
 * The cheapest type with at least `memoryGb` sold in `location`; ties go to more vCPUs, then to the catalogue's order
 * (x86_64 first, so the default box runs the same binaries as most laptops and CI).
 */
export function cheapestType(catalogue: CloudCatalogue, memoryGb: number, location: string): ServerType | undefined {
  const fits = catalogue.types.filter((t) => t.memoryGb >= memoryGb && t.sold.includes(location));
  return fits.reduce<ServerType | undefined>((best, t) => {
    if (!best) return t;
    if (t.monthlyPrice !== best.monthlyPrice) return t.monthlyPrice < best.monthlyPrice ? t : best;
    return t.vcpus > best.vcpus ? t : best;
  }, undefined);
}
