using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Patterns.EventSourcing;

/// <summary>
/// Reports the subscriptions and async projections of this process: unhealthy while any is
/// <see cref="SubscriptionState.Faulted"/> (it waits for <see cref="IEventSubscriptions.RestartAsync"/>), degraded while any
/// is <see cref="SubscriptionState.Recovering"/> from a store outage (it resumes by itself), healthy otherwise. Each one's
/// state is in the result's data.
/// </summary>
/// <remarks>
/// Registered by <c>AddEventSourcing</c>; add it to the health checks with
/// <c>services.AddHealthChecks().AddCheck&lt;EventSubscriptionsHealthCheck&gt;("patterns-subscriptions")</c>.
/// </remarks>
public sealed class EventSubscriptionsHealthCheck : IHealthCheck
{
    private readonly IEventSubscriptions _subscriptions;

    internal EventSubscriptionsHealthCheck(IEventSubscriptions subscriptions) => _subscriptions = subscriptions;

    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var statuses = _subscriptions.GetStatuses();
        var data = new Dictionary<string, object>(statuses.Count, StringComparer.Ordinal);
        List<string>? faulted = null;
        List<string>? recovering = null;
        foreach (var status in statuses)
        {
            switch (status.State)
            {
                case SubscriptionState.Faulted:
                    var fault = status.Error?.Message ?? $"Subscription '{status.Name}' faulted";
                    (faulted ??= []).Add(fault);
                    data[status.Name] = $"Unhealthy: {fault}";
                    break;
                case SubscriptionState.Recovering:
                    var outage = $"Subscription '{status.Name}' is recovering from a store outage at checkpoint {status.Checkpoint}: {status.StoreError?.GetType().Name}: {status.StoreError?.Message}";
                    (recovering ??= []).Add(outage);
                    data[status.Name] = $"Degraded: {outage}";
                    break;
                default:
                    data[status.Name] = status.State.ToString();
                    break;
            }
        }

        return Task.FromResult(
            faulted is not null ? HealthCheckResult.Unhealthy(string.Join("; ", faulted.Concat(recovering ?? [])), data: data)
            : recovering is not null ? HealthCheckResult.Degraded(string.Join("; ", recovering), data: data)
            : HealthCheckResult.Healthy($"{statuses.Count} subscription(s) and projection(s), none faulted or recovering", data));
    }
}
