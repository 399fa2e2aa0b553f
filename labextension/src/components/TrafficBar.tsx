import React from 'react';

import { IVariant } from '../tokens';

/** One bar per deployment: live variants share its width by weight; shadows listed after it, dashed. */
export function TrafficBar({ variants }: { variants: IVariant[] }): JSX.Element {
  const live = variants.filter(v => !v.shadow);
  const shadows = variants.filter(v => v.shadow);
  return (
    <div className="wolt-traffic">
      <div className="wolt-traffic-bar">
        {live.map((v, i) => (
          <div
            key={v.name}
            className={`wolt-traffic-segment wolt-color-${i % 6}`}
            style={{ width: `${v.traffic ?? 0}%` }}
            title={`${v.name}: ${v.traffic}% (${v.model})`}
            data-variant={v.name}
          >
            {(v.traffic ?? 0) >= 15 ? `${v.name} ${v.traffic}%` : ''}
          </div>
        ))}
      </div>
      <div className="wolt-traffic-legend">
        {live.map((v, i) => (
          <span key={v.name} className="wolt-traffic-item">
            <span className={`wolt-swatch wolt-color-${i % 6}`} />
            {v.name} {v.traffic}% <code>{v.model}</code>
          </span>
        ))}
        {shadows.map(v => (
          <span
            key={v.name}
            className="wolt-traffic-item wolt-shadow"
            title="sees a copy of every request, answers nobody"
          >
            <span className="wolt-swatch wolt-swatch-shadow" />
            {v.name} (shadow) <code>{v.model}</code>
          </span>
        ))}
      </div>
    </div>
  );
}
