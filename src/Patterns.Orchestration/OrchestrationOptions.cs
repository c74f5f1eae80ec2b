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

    /// <summary>Gets or sets whether this process runs activity workers (false for a process that only runs workflows).</summary>
    /// <value>True by default.</value>
    public bool RunActivityWorkers { get; set; } = true;
}
