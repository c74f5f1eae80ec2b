using Microsoft.Extensions.Options;
using Patterns.Transport;

namespace Patterns.RabbitMq;

[OptionsValidator]
internal sealed partial class RabbitMqTransportOptionsDataValidator : IValidateOptions<RabbitMqTransportOptions>;

/// <summary>Checks <see cref="RabbitMqTransportOptions"/> and reports every problem at once.</summary>
internal sealed class RabbitMqTransportOptionsValidator : IValidateOptions<RabbitMqTransportOptions>
{
    public ValidateOptionsResult Validate(string? name, RabbitMqTransportOptions options)
    {
        var errors = new List<string>();
        var data = new RabbitMqTransportOptionsDataValidator().Validate(name, options);
        if (data.Failed)
        {
            errors.AddRange(data.Failures ?? []);
        }

        if (options.Uri is { } uri)
        {
            if (!uri.IsAbsoluteUri || (uri.Scheme != "amqp" && uri.Scheme != "amqps"))
            {
                errors.Add($"RabbitMqTransportOptions.Uri must be an absolute amqp:// or amqps:// address (was '{uri}').");
            }
        }

        if (options.NamePrefix is null)
        {
            errors.Add("RabbitMqTransportOptions.NamePrefix must not be null (use an empty string for none).");
        }
        else if (options.NamePrefix.StartsWith("amq.", StringComparison.Ordinal))
        {
            errors.Add($"RabbitMqTransportOptions.NamePrefix must not start with 'amq.', which RabbitMQ reserves (was '{options.NamePrefix}').");
        }

        if (!string.IsNullOrWhiteSpace(options.TopicExchange) && TopicPattern.HasWildcards(options.TopicExchange))
        {
            errors.Add($"RabbitMqTransportOptions.TopicExchange must not contain '*' or '#' (was '{options.TopicExchange}').");
        }

        if (options.RetryDelays.Count == 0)
        {
            errors.Add("RabbitMqTransportOptions.RetryDelays must hold at least one delay.");
        }

        foreach (var delay in options.RetryDelays)
        {
            if (delay < TimeSpan.FromMilliseconds(1) || delay.TotalMilliseconds > uint.MaxValue)
            {
                errors.Add($"RabbitMqTransportOptions.RetryDelays: each delay must be between 1 ms and {TimeSpan.FromMilliseconds(uint.MaxValue)} (was {delay}).");
            }
        }

        if (options.RetryDelays.Select(RabbitMqTopology.Format).Distinct(StringComparer.Ordinal).Count() != options.RetryDelays.Count)
        {
            errors.Add("RabbitMqTransportOptions.RetryDelays must not hold the same delay twice.");
        }

        if (options.ConsumerGroupExpiry is { } expiry && (expiry < TimeSpan.FromMilliseconds(1) || expiry.TotalMilliseconds > uint.MaxValue))
        {
            errors.Add($"RabbitMqTransportOptions.ConsumerGroupExpiry must be between 1 ms and {TimeSpan.FromMilliseconds(uint.MaxValue)}, or null for never (was {expiry}).");
        }

        Positive(errors, options.ReconnectTimeout, nameof(options.ReconnectTimeout));
        Positive(errors, options.NetworkRecoveryInterval, nameof(options.NetworkRecoveryInterval));
        if (options.Heartbeat < TimeSpan.Zero || options.Heartbeat > TimeSpan.FromSeconds(ushort.MaxValue))
        {
            errors.Add($"RabbitMqTransportOptions.Heartbeat must be between zero (off) and {ushort.MaxValue} seconds (was {options.Heartbeat}).");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void Positive(List<string> errors, TimeSpan value, string name)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"RabbitMqTransportOptions.{name} must be positive (was {value}).");
        }
    }
}
