namespace Patterns.Orchestration;

/// <summary>What an activity knows about its call: the workflow, the attempt, cancellation and heartbeats.</summary>
public sealed class ActivityContext
{
    private readonly Action _heartbeat;

    internal ActivityContext(string instanceId, string activity, int attempt, IServiceProvider services, Action heartbeat, CancellationToken cancellationToken)
    {
        InstanceId = instanceId;
        Activity = activity;
        Attempt = attempt;
        Services = services;
        CancellationToken = cancellationToken;
        _heartbeat = heartbeat;
    }

    /// <summary>Gets the calling workflow instance's id.</summary>
    public string InstanceId { get; }

    /// <summary>Gets the activity's name.</summary>
    public string Activity { get; }

    /// <summary>Gets the attempt number, from 1.</summary>
    public int Attempt { get; }

    /// <summary>Gets the services of this attempt's DI scope.</summary>
    public IServiceProvider Services { get; }

    /// <summary>Gets the token cancelled when the attempt times out, misses a heartbeat, or the host stops.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>Reports progress: an attempt with a heartbeat timeout is cancelled when it goes that long without one.</summary>
    public void Heartbeat() => _heartbeat();
}
