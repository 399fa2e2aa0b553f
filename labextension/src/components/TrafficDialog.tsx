/** Dialog body: one slider per live variant, kept summing to 100. Its value is the weights to apply. */
import { ReactWidget } from '@jupyterlab/ui-components';
import React, { useState } from 'react';

import { rebalance } from '../model';
import { IVariant } from '../tokens';

export function WeightSliders(props: {
  names: string[];
  weights: number[];
  onChange: (weights: number[]) => void;
}): JSX.Element {
  return (
    <div className="wolt-weights">
      {props.names.map((name, i) => (
        <label key={name} className="wolt-weight">
          <span className="wolt-weight-name">{name}</span>
          <input
            type="range"
            min={0}
            max={100}
            value={props.weights[i]}
            aria-label={`weight of ${name}`}
            data-variant={name}
            onChange={e => props.onChange(rebalance(props.weights, i, Number(e.target.value)))}
          />
          <input
            type="number"
            min={0}
            max={100}
            className="wolt-weight-number"
            value={props.weights[i]}
            aria-label={`percent for ${name}`}
            onChange={e => props.onChange(rebalance(props.weights, i, Number(e.target.value)))}
          />
          %
        </label>
      ))}
    </div>
  );
}

export class TrafficDialogBody extends ReactWidget {
  constructor(live: IVariant[]) {
    super();
    this.addClass('wolt-dialog');
    this._names = live.map(v => v.name);
    this._weights = live.map(v => v.traffic ?? 0);
  }

  getValue(): { [variant: string]: number } {
    return Object.fromEntries(this._names.map((n, i) => [n, this._weights[i]]));
  }

  render(): JSX.Element {
    const Body = () => {
      const [weights, setWeights] = useState(this._weights);
      return (
        <WeightSliders
          names={this._names}
          weights={weights}
          onChange={w => {
            this._weights = w;
            setWeights(w);
          }}
        />
      );
    };
    return <Body />;
  }

  private _names: string[];
  private _weights: number[];
}
