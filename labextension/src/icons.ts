import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="3" y="14" width="4" height="7" rx="1"/>
    <rect x="10" y="9" width="4" height="12" rx="1"/>
    <rect x="17" y="4" width="4" height="17" rx="1"/>
    <path d="M3 10 L10 5 L14 7 L20 2" stroke="#616161" stroke-width="1.5" fill="none"/>
  </g>
</svg>`;

export const woltIcon = new LabIcon({ name: 'wolt-jupyter:icon', svgstr: svg });
