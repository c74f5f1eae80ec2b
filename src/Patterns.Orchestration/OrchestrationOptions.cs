using System.ComponentModel.DataAnnotations;

namespace Patterns.Orchestration;

/// <summary>Options of the workflow engine, its workers and their queues.</summary>
public sealed class OrchestrationOptions
{
    /// <summary>Gets or sets the queue activity tasks travel on.</summary>
    /// <value><c>orchestration.activities</c> by default.</value>
    [Required]
    public string ActivityQueue { get; set; } = "orchestration.activities";

    /// <summary>Gets or sets the queue activity results travel back on.</summary>
    /// <value><c>orchestration.results</c> by default.</value>
    [Required]
    public string ResultQueue { get; set; } = "orchestration.results";

    /// <summary>Gets or sets the topic that tells workers in other processes to cancel an activity its workflow stopped waiting for.</summary>
    /// <value><c>orchestration.cancellations</c> by default.</value>
    [Required]
    public string CancellationTopic { get; set; } = "orchestration.cancellations";

    /// <summary>Gets or sets the prefix of every history stream (<c>{prefix}{instanceId}</c>, then <c>~{run}</c> after continue-as-new).</summary>
    /// <value><c>wf-</c> by default.</value>
    [Required]
    public string StreamPrefix { get; set; } = "wf-";

    /// <summary>Gets or sets how many activities this process runs at once.</summary>
    /// <value>32 by default.</value>
    [Range(1, 10_000)]
    public int ActivityConcurrency { get; set; } = 32;

    /// <summary>Gets or sets how many activity results this process applies to workflows at once (each instance is still one at a time).</summary>
    /// <value>64 by default.</value>
    [Range(1, 10_000)]
    public int ResultConcurrency { get; set; } = 64;

    /// <summary>Gets or sets the history length from which <see cref="WorkflowContext.IsContinueAsNewSuggested"/> is true.</summary>
    /// <value>10,000 events by default.</value>
    [Range(10, 10_000_000)]
    public int ContinueAsNewSuggestedAfter { get; set; } = 10_000;

    /// <summary>Gets or sets how often a workflow task is retried when another writer appended to the instance first.</summary>
    /// <value>20 by default.</value>
    [Range(1, 1000)]
    public int MaxConflictRetries { get; set; } = 20;

    /// <summary>Gets or sets whether the host resumes running instances at start: reloads them, re-arms their timers and re-sends activity tasks an in-process transport lost.</summary>
    /// <value>True by default.</value>
    public bool RecoverOnStart { get; set; } = true;

    /// <summary>
    /// Gets or sets whether each instance is owned by one process at a time when several processes share a durable store:
    /// instances fall into <see cref="Partitions"/> partitions, each held by one process through a lease (renewed every
    /// third of <see cref="LeaseDuration"/>); only the holder runs, dispatches and commits its instances (commits are fenced
    /// by the lease), and another process takes a partition over, resuming its instances, once its lease is released or
    /// expires. Requests for an instance this process does not own are handed to the owner through the store.
    /// </summary>
    /// <value>True by default; has no effect on the in-memory store (one process).</value>
    public bool ExclusiveOwnership { get; set; } = true;

    /// <summary>Gets or sets how many ownership partitions instances are spread over (fixed for a store: every process must use the same number).</summary>
    /// <value>16 by default.</value>
    [Range(1, 4096)]
    public int Partitions { get; set; } = 16;

    /// <summary>Gets or sets how long a process owns a partition after its last lease renewal: another takes over within about 4/3 of it after the owner dies (as it runs out on PostgreSQL, which wakes standbys then).</summary>
    /// <value>15 seconds by default; between 1 second and 1 hour.</value>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Gets or sets the fallback interval between processes that share a store. Requests handed to a partition's owner, and
    /// the ends of instances and updates that a waiting client in another process needs, are pushed: they wake the other
    /// process through the store (at once in-process, through LISTEN/NOTIFY on PostgreSQL, at the SQLite store's poll
    /// interval on SQLite). Only in case such a wake-up is lost (a dropped notification connection, or an instance that faulted,
    /// which records no history event) does the owner read its mailboxes, and a waiting client the instance's state, this often.
    /// It is also how often a balancing process checks whether it should give a partition up for one that joined.
    /// </summary>
    /// <value>5 seconds by default.</value>
    public TimeSpan HandoffInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Gets or sets whether processes sharing a store spread the partitions evenly: each announces itself in the store
    /// (renewed every third of <see cref="LeaseDuration"/>), takes partitions only up to its share (the partitions divided
    /// by the live processes, rounded up), and gives up those beyond its share when another process joins. Without it the
    /// first process takes every free partition and the others stand by.
    /// </summary>
    /// <value>
    /// False by default. A process at its share retries free partitions every third of <see cref="LeaseDuration"/>, so
    /// after another process stops or dies its partitions are taken over up to that much later than without balancing.
    /// </value>
    public bool BalancePartitions { get; set; }

    /// <summary>
    /// Gets or sets this process's owner id for partition leases. A stable id (a pod or service name) lets a restarted
    /// process take its partitions back at once instead of waiting for their leases to expire; two live processes must never share one.
    /// </summary>
    /// <value>Null by default: the machine name, the process id and a random suffix.</value>
    public string? NodeId { get; set; }

    /// <summary>
    /// Gets or sets how many idle instances that wait only for signals, updates or conditions keep their live state cached.
    /// Beyond it, those that went idle longest ago are evicted: their next signal, update, query or cancellation replays
    /// their history (the cold path) before it is handled, so nothing they hold is lost, and a signal is still applied once.
    /// Instances that wait for an activity, a timer or a child are never evicted (their results find them live).
    /// </summary>
    /// <value>10,000 by default; 0 evicts every such instance as soon as it goes idle.</value>
    [Range(0, int.MaxValue)]
    public int MaxCachedIdleInstances { get; set; } = 10_000;

    /// <summary>
    /// Gets or sets how many instances this process runs workflow tasks for at once (each instance is still one task at a
    /// time). An instance with work beyond it waits its turn holding only its queued requests, oldest first: a burst of
    /// starts, signals or fired timers for many instances then holds that many live workflow tasks (their executors,
    /// history and units of work) at a time instead of one per instance. Enough for commits to group (up to 512 units
    /// each). An instance with more work after a task goes behind those that wait. A workflow task gives its place up while
    /// its local activities run (they may wait for another instance) and takes one back after them, even beyond the limit,
    /// so instances in local activities are not counted (nor bounded) by it.
    /// </summary>
    /// <value>1,024 by default; from 1 to 1,000,000.</value>
    [Range(1, 1_000_000)]
    public int MaxConcurrentWorkflowTasks { get; set; } = 1_024;

    /// <summary>Gets or sets whether this process runs activity workers (false for a process that only runs workflows).</summary>
    /// <value>True by default.</value>
    public bool RunActivityWorkers { get; set; } = true;
}
